import Foundation

/// The version every Hydra binary reports (`--version`, metrics, heartbeats).
public let hydraVersion = "0.1.0"
