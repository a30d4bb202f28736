"""Local stand-ins for the outside world (Vercel API emulator, Slack/Mailtrap/webhook/SMTP sinks, a demo
service), so anyone can use ops-agent without accounts. `ops_agent` never imports this package: the tools
reach these stand-ins exactly as they reach the real services, through configured URLs.
"""
