import Foundation
import XCTest
@testable import HydraCore
@testable import HydraConsole

final class ThumbnailTests: XCTestCase {
    func fixture() throws -> Data {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "Fixtures/thumbs/gradient-rgba-300x200", withExtension: "png"))
        return try Data(contentsOf: url)
    }

    func testEveryPixelOfACompressedFilteredPNGDecodes() throws {
        let img = try XCTUnwrap(PNGThumbnail.decode([UInt8](try fixture())))
        XCTAssertEqual(img.width, 300)
        XCTAssertEqual(img.height, 200)
        for y in 0..<200 {
            for x in 0..<300 {
                let i = (y * 300 + x) * 4
                let expected: [UInt8] = [UInt8(x % 256), UInt8(y % 256), UInt8((x * y) % 256), (x + y) % 7 == 0 ? 128 : 255]
                if Array(img.pixels[i..<i + 4]) != expected { return XCTFail("pixel \(x),\(y): \(img.pixels[i..<i + 4]) != \(expected)") }
            }
        }
    }

    func testThumbnailsAreSmallPNGsOfTheAverageColour() throws {
        let thumb = try XCTUnwrap(PNGThumbnail.make(try fixture(), maxSide: 100))
        XCTAssertEqual(PNGEncoder.dimensions(thumb).map { [$0.0, $0.1] }, [100, 66])
        let t = try XCTUnwrap(PNGThumbnail.decode([UInt8](thumb)))
        // Pixel (10, 10) of the thumbnail averages the 3×3 box from (30, 30), alpha over white.
        var r = 0
        for y in 30..<33 { for x in 30..<33 { let a = (x + y) % 7 == 0 ? 128 : 255; r += (x * a + 255 * (255 - a)) / 255 } }
        XCTAssertEqual(Int(t.pixels[(10 * 100 + 10) * 3]), r / 9)
        // An image already small is re-encoded, not enlarged; what is not a PNG gives nil.
        let small = PNGEncoder.rgb(width: 8, height: 4) { x, y in (UInt8(x), UInt8(y), 7) }
        XCTAssertEqual(PNGThumbnail.make(small).flatMap(PNGEncoder.dimensions).map { [$0.0, $0.1] }, [8, 4])
        XCTAssertNil(PNGThumbnail.make(Data("GIF89a not a png".utf8)))
    }

    func testDamagedPNGsNeverCrashTheDecoder() throws {
        let good = [UInt8](try fixture())
        var rng = SplitMix64(seed: 99)
        for _ in 0..<150 {
            var b = good
            for _ in 0..<(1 + Int(rng.next() % 8)) {
                let i = 8 + Int(rng.next() % UInt64(b.count - 8))
                b[i] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
            }
            if rng.next() % 4 == 0 { b = Array(b.prefix(Int(rng.next() % UInt64(b.count)))) }
            _ = PNGThumbnail.make(Data(b), maxSide: 64)
        }
    }

    func testAnyClaimedSizeIsRefusedOrDecodedNeverATrap() throws {
        // The IHDR sides are 32-bit: 4294967295 × 4294967295 once overflowed the pixel count and
        // stopped the coordinator serving /thumb. Every side value, extreme or random, must be
        // refused (nil) or decoded; only sizes within maxPixels may decode.
        let good = [UInt8](try fixture())
        var rng = SplitMix64(seed: 2026)
        let extremes: [UInt32] = [0, 1, 200, 300, 4097, 65_536, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF]
        var sides = extremes.flatMap { w in extremes.map { (w, $0) } }
        for _ in 0..<200 { sides.append((UInt32(truncatingIfNeeded: rng.next()), UInt32(truncatingIfNeeded: rng.next() >> UInt64(rng.next() % 32)))) }
        for (w, h) in sides {
            var b = good
            for (o, v) in [(16, w), (20, h)] { for k in 0..<4 { b[o + k] = UInt8(truncatingIfNeeded: v >> (24 - 8 * UInt32(k))) } }
            if let img = PNGThumbnail.decode(b) {
                XCTAssertLessThanOrEqual(img.width * img.height, PNGThumbnail.maxPixels, "\(w) × \(h)")
            }
            _ = PNGThumbnail.make(Data(b), maxSide: 64)
        }
        XCTAssertNotNil(PNGThumbnail.decode(good), "the fixture itself still decodes")
    }
}
