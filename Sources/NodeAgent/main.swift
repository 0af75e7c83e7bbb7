print("hydra-agent")
