import XCTest
import Foundation
@testable import HydraCore
@testable import HydraIO
@testable import HydraConsole

/// The console's Host check: exact names and strict dotted-quad loopback addresses only.
final class ConsoleHostTests: XCTestCase {
    let policy = ConsoleHostPolicy(names: ["console.example"], boundAddress: "10.0.0.5")

    func testExactlyTheLoopbackNamesPass() {
        let plain = ConsoleHostPolicy()
        for ok in ["localhost", "localhost:8480", "LocalHost:1", "127.0.0.1", "127.0.0.1:8480", "127.255.255.254:65535", "127.1.2.3",
                   "[::1]", "[::1]:8480"] {
            XCTAssertTrue(plain.allows(ok), ok)
        }
        for bad in ["127.1.evil.example", "127.0.0.1.nip.io", "localhost.evil", "evil.localhost", "localhost.", "127.1", "127.0.1",
                    "127.0.0.01", "0127.0.0.1", "127.0.0.256", "127.0.0.1.", "127.0.0.1:", "127.0.0.1:99999", "127.0.0.1:80a",
                    "127.0.0.1:+80", "127.0.0.1:-1", "127.0.0.1:123456", "localhost:80:80", "[::1]evil", "[::1]:", "[::2]", "[::ffff:127.0.0.1]",
                    "::1", "[::1", "", " localhost", "localhost ", "localhost\t", "127.0.0.1\u{0}", "local\u{0}host", "l\u{043E}calhost",
                    "１２７.0.0.1", "user@localhost", "localhost/x", "http://localhost", "0x7f.0.0.1", "2130706433", "0.0.0.0", "10.0.0.5",
                    "console.example", "127.0.0.1 .evil", String(repeating: "a", count: 300), "127.0.0.1:" + String(repeating: "0", count: 300)] {
            XCTAssertFalse(plain.allows(bad), bad.debugDescription)
        }
        XCTAssertFalse(plain.allows(nil))
    }

    func testConfiguredNamesAndTheBoundAddressPassExactly() {
        for ok in ["console.example", "CONSOLE.example:443", "10.0.0.5", "10.0.0.5:8480", "localhost", "127.0.0.1"] { XCTAssertTrue(policy.allows(ok), ok) }
        for bad in ["console.example.evil", "evil.console.example", "console.example.", "10.0.0.50", "10.0.0.5.nip.io", "10.0.0.6"] {
            XCTAssertFalse(policy.allows(bad), bad)
        }
        XCTAssertNil(ConsoleHostPolicy(boundAddress: "0.0.0.0").boundAddress, "0.0.0.0 is not a name anyone browses to")
        XCTAssertTrue(ConsoleHostPolicy.isValidName("console.example") && ConsoleHostPolicy.isValidName("10.0.0.5"))
        for bad in ["", "console.example:443", "http://x", "a..b", ".a", "a b", "ex\u{0}ample", "exämple"] { XCTAssertFalse(ConsoleHostPolicy.isValidName(bad), bad) }
        XCTAssertFalse(ConsoleToken.isLoopback(host: "127.1.evil.example"))
        XCTAssertFalse(ConsoleToken.isLoopback(host: "127.0.0.1.nip.io"))
        XCTAssertTrue(ConsoleToken.isLoopback(host: "127.0.0.2"))
    }

    /// An independent oracle (a regular expression) against the hand-written parser, on
    /// random strings that are mostly near-misses of allowed ones.
    func testGeneratedHostHeadersPassOnlyWhenExactlyAllowed() throws {
        let octet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
        let oracle = try NSRegularExpression(pattern: "^(localhost|console\\.example|10\\.0\\.0\\.5|\\[::1\\]|127\\.\(octet)\\.\(octet)\\.\(octet))(:([0-9]{1,5}))?\\z",
                                             options: [.caseInsensitive])
        func expected(_ s: String) -> Bool {
            guard s.unicodeScalars.allSatisfy({ $0.isASCII }) else { return false }
            let ns = s as NSString
            guard let m = oracle.firstMatch(in: s, range: NSRange(location: 0, length: ns.length)) else { return false }
            let port = m.range(at: 6)
            if port.location != NSNotFound, let p = Int(ns.substring(with: port)), p > 65535 { return false }
            return true
        }
        let seeds = ["localhost", "127.0.0.1", "127.1.2.3:8480", "[::1]:8480", "console.example", "10.0.0.5:80", "127.1.evil.example",
                     "127.0.0.1.nip.io", "localhost.evil", "", "255.255.255.255"]
        let pieces = [".", ":", "[", "]", "0", "1", "7", "9", "00", "256", "127", "evil", ".example", ".nip.io", "localhost", "\u{0}", " ", "\t",
                      "é", "\u{043E}", "\u{FF11}", "\u{1F600}", "%2e", "@", "/", "-", "65536", "99999", String(repeating: "9", count: 40)]
        var rng = SplitMix64(seed: 0x5EED_0014)
        var allowedSeen = 0
        for _ in 0..<20_000 {
            var s = Array(seeds[Int(rng.next() % UInt64(seeds.count))])
            for _ in 0..<Int(rng.next() % 4) {
                let piece = Array(pieces[Int(rng.next() % UInt64(pieces.count))])
                let at = Int(rng.next() % UInt64(s.count + 1))
                switch rng.next() % 3 {
                case 0: s.insert(contentsOf: piece, at: at)
                case 1: if !s.isEmpty { s.remove(at: min(at, s.count - 1)) }
                default: if !s.isEmpty { s.replaceSubrange(min(at, s.count - 1)..<min(at, s.count - 1) + 1, with: piece) }
                }
            }
            let host = String(s)
            let want = expected(host)
            if want { allowedSeen += 1 }
            XCTAssertEqual(policy.allows(host), want, host.debugDescription)
            if policy.allows(host) != want { break }
        }
        XCTAssertGreaterThan(allowedSeen, 500, "the generator reaches allowed values too, so the test can tell them apart")
    }

    func testConsoleRefusesForeignHostsBeforeAnythingElse() {
        let noToken = ConsoleServer(databaseURL: "postgres://nobody@127.0.0.1:1/none?connect_timeout=1", settings: ConsoleSettings())
        func status(_ s: ConsoleServer, _ path: String, _ host: String, method: String = "GET", headers: [String: String] = [:]) -> (Int, [String: String]) {
            guard case .full(let st, let h, _) = s.handle(HTTPRequest.local(method, path, headers: headers.merging(["host": host]) { $1 })) else { return (0, [:]) }
            return (st, h)
        }
        for host in ["127.1.evil.example:8480", "127.0.0.1.nip.io", "localhost.evil"] {
            let (st, h) = status(noToken, "/static/console.css", host)
            XCTAssertEqual(st, 403, host)
            XCTAssertNil(h["Set-Cookie"], "no session for a rebound page")
            XCTAssertEqual(status(noToken, "/login", host, method: "POST").0, 403)
            XCTAssertEqual(status(noToken, "/api/v1/nodes/x/drain", host, method: "POST", headers: ["x-hydra-client": "curl"]).0, 403)
        }
        XCTAssertEqual(status(noToken, "/static/console.css", "127.0.0.1:8480").0, 200)

        let named = ConsoleServer(databaseURL: "postgres://nobody@127.0.0.1:1/none?connect_timeout=1",
                                  settings: ConsoleSettings(token: "t0ken-t0ken-t0ken", hosts: ConsoleHostPolicy(names: ["console.example"])))
        XCTAssertEqual(status(named, "/api/v1/nodes", "other.example").0, 403)
        XCTAssertEqual(status(named, "/api/v1/nodes", "console.example").0, 401, "the right name gets as far as the token check")
        let anyName = ConsoleServer(databaseURL: "postgres://nobody@127.0.0.1:1/none?connect_timeout=1",
                                    settings: ConsoleSettings(token: "t0ken-t0ken-t0ken"))
        XCTAssertEqual(status(anyName, "/api/v1/nodes", "other.example").0, 401, "a token without --console-host names keeps answering any name")
    }
}
