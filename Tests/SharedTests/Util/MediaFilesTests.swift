import XCTest
import Foundation
@testable import HydraCore

final class MediaFilesTests: XCTestCase {
    func testSHA256Vectors() {
        XCTAssertEqual(SHA256Digest.hex(Data()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256Digest.hex(Data("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256Digest.hex(Data("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // Chunked updates across block boundaries equal one-shot hashing.
        let big = Data((0..<1000).map { UInt8($0 % 251) })
        var d = SHA256Digest()
        d.update(big.prefix(63)); d.update(big.dropFirst(63).prefix(130)); d.update(big.dropFirst(193))
        XCTAssertEqual(d.finalize().map { String(format: "%02x", $0) }.joined(), SHA256Digest.hex(big))
        XCTAssertEqual(SHA256Digest.hex(Data(repeating: 0x61, count: 1_000_000)),
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    func testChecksumVectors() {
        XCTAssertEqual(Checksums.crc32(Array("123456789".utf8)), 0xCBF43926)
        XCTAssertEqual(Checksums.adler32(Array("Wikipedia".utf8)), 0x11E60398)
    }

    func testPNGIsWellFormed() throws {
        let png = PNGEncoder.rgb(width: 7, height: 5) { x, y in (UInt8(x * 30), UInt8(y * 40), 9) }
        XCTAssertEqual(PNGEncoder.dimensions(png)?.0, 7)
        XCTAssertEqual(PNGEncoder.dimensions(png)?.1, 5)
        // Every chunk's CRC must match, and the zlib stream must inflate to the raw scanlines.
        let b = [UInt8](png)
        var i = 8
        var idat: [UInt8] = []
        while i < b.count {
            let len = Int(b[i]) << 24 | Int(b[i + 1]) << 16 | Int(b[i + 2]) << 8 | Int(b[i + 3])
            let typeAndData = Array(b[(i + 4)..<(i + 8 + len)])
            let crc = UInt32(b[i + 8 + len]) << 24 | UInt32(b[i + 9 + len]) << 16 | UInt32(b[i + 10 + len]) << 8 | UInt32(b[i + 11 + len])
            XCTAssertEqual(Checksums.crc32(typeAndData), crc)
            if String(decoding: typeAndData[0..<4], as: UTF8.self) == "IDAT" { idat = Array(typeAndData[4...]) }
            i += 12 + len
        }
        XCTAssertEqual(idat[0], 0x78)
        XCTAssertEqual((UInt16(idat[0]) << 8 | UInt16(idat[1])) % 31, 0, "zlib header check bits")
        let stored = Int(idat[3]) | Int(idat[4]) << 8
        XCTAssertEqual(stored, 5 * (7 * 3 + 1))
    }

    func testWAVRoundTripAndStreamingHeader() {
        let wav = WAVFile.mono16(sampleRate: 32000, samples: [0, 100, -100, 5])
        let info = WAVFile.inspect(wav)
        XCTAssertEqual(info?.sampleRate, 32000)
        XCTAssertEqual(info?.frames, 4)
        XCTAssertEqual(info?.allZero, false)
        let streamed = WAVFile.header(sampleRate: 32000, dataLength: 0) + WAVFile.pcm16([0, 0, 0])
        XCTAssertEqual(WAVFile.inspect(streamed)?.frames, 3)
        XCTAssertEqual(WAVFile.inspect(streamed)?.allZero, true)
        XCTAssertNil(WAVFile.inspect(Data("not audio".utf8)))
    }
}
