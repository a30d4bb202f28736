from ops_agent.cli import main

main()
