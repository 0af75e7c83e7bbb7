import XCTest
@testable import HydraCore

/// Numeric command-line options: NaN, infinities and out-of-range values are refused by name.
final class OptionCheckTests: XCTestCase {
    /// Values drawn around each bound, the special values, and random magnitudes of both signs:
    /// a value passes exactly when it is finite and inside the range, and every refusal names the
    /// option and the value as given.
    func testSecondsPassOnlyFiniteValuesInsideTheRange() {
        var rng = SplitMix64(seed: 0x5EC0_0D5)
        let specials: [Double] = [.nan, -.nan, .infinity, -.infinity, 0, -0.0, .leastNonzeroMagnitude, .greatestFiniteMagnitude,
                                  -.greatestFiniteMagnitude, 1e300, -1, 1e-300]
        var refused = 0
        for _ in 0..<4000 {
            let min = [0.0, 0.05, 1][Int(rng.next() % 3)]
            let max = [600.0, 3_600, 86_400, 1e9][Int(rng.next() % 4)]
            let included = rng.next() % 2 == 0
            let v: Double
            switch rng.next() % 4 {
            case 0: v = specials[Int(rng.next() % UInt64(specials.count))]
            case 1: v = [min, max, min.nextDown, min.nextUp, max.nextDown, max.nextUp][Int(rng.next() % 6)]
            case 2: v = Double(Int64(bitPattern: rng.next()) % 200_000) / 100
            default: v = (rng.next() % 2 == 0 ? 1 : -1) * pow(10, Double(rng.next() % 40) - 10)
            }
            let flag = "--opt-\(rng.next() % 7)"
            let m = OptionCheck.seconds(v, flag, min: min, minIncluded: included, max: max)
            let inside = !v.isNaN && !v.isInfinite && (included ? v >= min : v > min) && v <= max
            XCTAssertEqual(m == nil, inside, "\(v) in \(included ? "[" : "(")\(min), \(max)]: \(m ?? "accepted")")
            if let m {
                refused += 1
                XCTAssertTrue(m.hasPrefix("\(flag) must be a number of seconds "), m)
                XCTAssertTrue(m.hasSuffix(", got \(OptionCheck.number(v))"), m)
                XCTAssertFalse(m.contains("\n"), m)
            }
        }
        XCTAssertGreaterThan(refused, 1000)
        XCTAssertEqual(OptionCheck.seconds(.nan, "--node-timeout", min: 0, max: 86_400),
                       "--node-timeout must be a number of seconds greater than 0 and at most 86400, got nan")
        XCTAssertEqual(OptionCheck.seconds(0.01, "--interval", min: 0.05, minIncluded: true, max: 3_600),
                       "--interval must be a number of seconds from 0.05 to 3600, got 0.01")
        XCTAssertEqual(OptionCheck.seconds(-.infinity, "--grace", min: 0, minIncluded: true, max: 86_400),
                       "--grace must be a number of seconds from 0 to 86400, got -inf")
    }

    func testCountsAndTheFirstOfSeveral() {
        XCTAssertNil(OptionCheck.count(1, "--limit", min: 1, max: 10))
        XCTAssertNil(OptionCheck.count(10, "--limit", min: 1, max: 10))
        XCTAssertEqual(OptionCheck.count(0, "--limit", min: 1, max: 10), "--limit must be from 1 to 10, got 0")
        XCTAssertEqual(OptionCheck.count(.min, "--limit", min: 1, max: 10), "--limit must be from 1 to 10, got \(Int.min)")
        XCTAssertNil(OptionCheck.first(nil, nil))
        XCTAssertEqual(OptionCheck.first(nil, "b", "c"), "b")
    }
}
