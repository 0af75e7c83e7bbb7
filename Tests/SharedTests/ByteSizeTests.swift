import XCTest
@testable import HydraCore

final class ByteSizeTests: XCTestCase {
    func testParsesBinaryAndDecimalUnits() {
        XCTAssertEqual(ByteSize.parse("24GiB"), 24 * ByteSize.GiB)
        XCTAssertEqual(ByteSize.parse("512 MiB"), 512 * ByteSize.MiB)
        XCTAssertEqual(ByteSize.parse("1.5G"), 3 * ByteSize.GiB / 2)
        XCTAssertEqual(ByteSize.parse("2GB"), 2_000_000_000)
        XCTAssertEqual(ByteSize.parse("1073741824"), ByteSize.GiB)
        XCTAssertNil(ByteSize.parse("lots"))
        XCTAssertNil(ByteSize.parse("12 parsecs"))
        XCTAssertNil(ByteSize.parse(""))
    }

    func testFormatsForOperators() {
        XCTAssertEqual(ByteSize.format(18 * ByteSize.GiB + ByteSize.GiB / 5), "18.2 GiB")
        XCTAssertEqual(ByteSize.format(512 * ByteSize.MiB), "512.0 MiB")
    }
}
