"""Configuration of the Vercel emulator. Every key is optional: the defaults give one project,
`demo-app` (GitHub acme/demo-app, production branch main, custom environment `staging`), and the token
`sandbox-token` acting in team `team_sandbox`, so a new user can deploy at once.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserConfig(_Config):
    """The account owner every token acts as (`creator` of deployments)."""

    uid: str = "usr_sandbox0000000000000000"
    username: str = "sandbox"
    email: str = "sandbox@example.invalid"


class GitLinkConfig(_Config):
    type: Literal["github", "github-limited"] = "github"
    org: str
    repo: str
    repoId: int | None = Field(None, description="GitHub repository id; derived from org/repo when omitted.")
    productionBranch: str = "main"


class BranchMatcherConfig(_Config):
    type: Literal["endsWith", "startsWith", "equals"]
    pattern: str


class CustomEnvironmentConfig(_Config):
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    id: str | None = Field(None, description="env_…; derived from the project and slug when omitted.")
    type: Literal["preview", "production", "development"] = "preview"
    description: str = ""
    branchMatcher: BranchMatcherConfig | None = None


class ProjectConfig(_Config):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    id: str | None = Field(None, description="prj_…; derived from the name when omitted.")
    framework: str | None = "nextjs"
    link: GitLinkConfig | None = Field(None, description="The git repository; without one only file deployments work.")
    team_id: str | None = Field(None, description="Owning team; default: the team of the first token.")
    custom_environments: list[CustomEnvironmentConfig] = []


def _default_projects() -> list[ProjectConfig]:
    return [
        ProjectConfig(
            name="demo-app",
            link=GitLinkConfig(org="acme", repo="demo-app"),
            custom_environments=[CustomEnvironmentConfig(slug="staging", description="Pre-production checks")],
        )
    ]


class EmulatorConfig(_Config):
    """Everything the emulator can be told. All optional: the defaults give one deployable project."""

    tokens: dict[str, str] = Field(
        default_factory=lambda: {"sandbox-token": "team_sandbox"},
        description="Bearer token -> team id it acts in.",
        min_length=1,
    )
    user: UserConfig = Field(default_factory=UserConfig)
    projects: list[ProjectConfig] = Field(default_factory=_default_projects)
    build_time_s: float = Field(2.0, ge=0, description="Creation to READY/ERROR; QUEUED for the first 10%.")
    failed_build_rate: float = Field(0.0, ge=0, le=1, description="Share of builds that end in ERROR.")
    fail_branches: list[str] = Field([], description="Git refs whose builds always fail.")
    transient_error_rate: float = Field(0.0, ge=0, le=1, description="Share of requests answered 429/500/502/503.")
    retry_after_s: int = Field(0, ge=0, description="Retry-After (seconds) on injected 429 and 503 answers.")
    slow_response_s: float = Field(0.0, ge=0, description="Latency added to every API request.")
    lost_response_rate: float = Field(
        0.0, ge=0, le=1, description="Share of createDeployment requests that create the deployment, then answer 500."
    )
    rate_limit: int = Field(1000, ge=1, description="Requests per token, per operation, per window (then 429).")
    rate_limit_window_s: float = Field(60.0, gt=0)
    seed: int | None = Field(None, description="Seed of the random generator (ids, faults); None = fresh each run.")
    # What a project's own build prints is text from the world: the attack suite puts instructions in it.
    build_output: list[str] = Field([], description="Extra lines every build prints to stdout (after install).")
    build_error_message: str = Field(
        'Command "npm run build" exited with 1', description="errorMessage of a failed deployment (Vercel's body)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> EmulatorConfig:
        teams = set(self.tokens.values())
        for attribute in ("name", "id"):
            values = [getattr(p, attribute) for p in self.projects if getattr(p, attribute)]
            if len(values) != len(set(values)):
                raise ValueError(f"projects: duplicate project {attribute}")
        for project in self.projects:
            if project.team_id is not None and project.team_id not in teams:
                raise ValueError(f"project {project.name}: team {project.team_id} is not the team of any token")
        return self

    @property
    def default_team(self) -> str:
        return next(iter(self.tokens.values()))
