import XCTest
import Foundation
@testable import HydraCore

final class ExcerptTests: XCTestCase {
    func testTextIsQuotedOnOneLineAndCut() {
        XCTAssertEqual(Excerpt.of("  500 Internal Server Error\n\nServer got itself in trouble\n"),
                       "500 Internal Server Error  Server got itself in trouble")
        XCTAssertEqual(Excerpt.of(String(repeating: "é", count: 1000), limit: 10), String(repeating: "é", count: 10) + "…")
        XCTAssertEqual(Excerpt.of(Data(String(repeating: "é", count: 1000).utf8), limit: 10), String(repeating: "é", count: 10) + "…")
        XCTAssertEqual(Excerpt.of(Data("{\"detail\":\"Invalid API key\"}".utf8)), "{\"detail\":\"Invalid API key\"}")
        XCTAssertEqual(Excerpt.of(Data()), "")
    }

    func testBinaryIsNamedNotPasted() {
        var wav = Data("RIFF".utf8) + Data([0x24, 0x7d, 0, 0]) + Data("WAVEfmt ".utf8)
        wav += Data(repeating: 0x80, count: 400)
        XCTAssertEqual(Excerpt.of(wav), "(416 bytes, not text)")
        XCTAssertEqual(Excerpt.of("ok\u{0}then"), "(7 bytes, not text)")
        XCTAssertEqual(Excerpt.of(Data([0x7b, 0xff, 0x7d])), "(3 bytes, not text)")
    }

    func testRandomBytesGiveOneShortLine() {
        var rng = SplitMix64(seed: UInt64.random(in: 1...UInt64.max))
        let alphabet: [UInt8] = Array(0...255)
        for _ in 0..<5_000 {
            let n = Int(rng.next() % 2_000)
            // Mostly printable ASCII with some bytes of any value: both outcomes occur.
            let bytes = (0..<n).map { _ in rng.next() % 50 == 0 ? alphabet[Int(rng.next() % 256)] : UInt8(32 + rng.next() % 95) }
            let limit = 1 + Int(rng.next() % 300)
            let e = Excerpt.of(Data(bytes), limit: limit)
            XCTAssertFalse(e.contains("\n") || e.contains("\r"), e)
            XCTAssertFalse(e.unicodeScalars.contains { $0.properties.generalCategory == .control }, e)
            XCTAssertTrue(e.count <= limit + 1 || e == "(\(n) bytes, not text)", "\(e.count) > \(limit): \(e)")
        }
    }
}
