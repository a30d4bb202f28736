"""ops-agent as an MCP client of peer agents (config `peers`): each peer's tools, discovered at start, are
offered in the one registry as `<peer>__<tool>` and every call passes the governance gate.

Naming: the registry and the Anthropic API allow no '.', so the issue's `dev_agent.open_fix_request` is the
tool `dev_agent__open_fix_request` everywhere (its title keeps the dotted form). `peer_tool_name(peer,
tool)` builds the name; `Peers.tool_name(peer_or_role, tool)` finds an offered one by peer or by role.
See docs/MCP.md, "Peers".
"""

from ops_agent.peers._connection import PeerConnection, Peers, PeerStatus, open_peers
from ops_agent.peers._specs import PeerOutput, peer_spec, peer_tool_name

__all__ = ["PeerConnection", "PeerOutput", "PeerStatus", "Peers", "open_peers", "peer_spec", "peer_tool_name"]
