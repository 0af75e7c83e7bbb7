import ArgumentParser
import Foundation
import HydraWire

/// `--hmac-key` / `--hmac-key-previous`: paths only; the key itself never appears in argv or the environment.
public struct SigningOptions: ParsableArguments {
    @Option(name: .customLong("hmac-key"), help: "File with the HMAC key that signs envelopes (mode 0600; default: the hmac.key systemd credential).")
    public var hmacKey: String?
    @Option(name: .customLong("hmac-key-previous"), help: "File with the previous key, still accepted during a rotation.")
    public var hmacKeyPrevious: String?

    public init() {}

    public func load() throws -> SigningKeys? {
        do { return try SigningKeys.load(current: hmacKey, previous: hmacKeyPrevious) } catch { throw ValidationError("\(error)") }
    }
}
