import XCTest
@testable import HydraCore

final class DependencyTailsTests: XCTestCase {
    func testTheLongestChainBehindEachJob() {
        // a → b → c, a → d; e alone. Own runtimes 1, 2, 4, 8, 16.
        let deps = [[], [0], [1], [0], []]
        let tails = DependencyTails.compute(dependsOn: deps, ownS: [1, 2, 4, 8, 16])
        XCTAssertEqual(tails, [8, 4, 0, 0, 0])   // a: max(b 2 + c 4, d 8)
    }

    func testADiamondCountsItsLongerSideOnceAndOrderDoesNotMatter() {
        // d waits on b and c, both on a; listed out of order (dependents before their dependencies).
        let deps = [[1, 2], [3], [3], []]   // 0 = d, 1 = b, 2 = c, 3 = a
        let tails = DependencyTails.compute(dependsOn: deps, ownS: [5, 1, 3, 2])
        XCTAssertEqual(tails, [0, 5, 5, 8])
    }

    func testBadReferencesAndCyclesEndWithoutLooping() {
        // Out of range, self and duplicate references are ignored or harmless; a cycle 1 ⇄ 2 gets
        // nothing from inside itself but job 0 still sees job 3 behind it.
        let tails = DependencyTails.compute(dependsOn: [[], [2, 9, -1], [1], [0, 0, 3]], ownS: [1, 1, 1, 6])
        XCTAssertEqual(tails[0], 6)
        XCTAssertEqual(tails[3], 0)
        XCTAssertEqual(tails[1], 0)
        XCTAssertEqual(DependencyTails.compute(dependsOn: [], ownS: []), [])
    }

    func testOwnRuntimeIsTheOrderingsScale() {
        XCTAssertEqual(DependencyTails.ownS(kind: "image", spec: .object(["base_runtime_s": .number(300)]), cpuOnly: false), 30)
        XCTAssertEqual(DependencyTails.ownS(kind: "score", spec: .object(["base_runtime_s": .number(6)]), cpuOnly: true), 6)
        XCTAssertEqual(DependencyTails.ownS(kind: "sleep", spec: .object(["duration_s": .number(7), "base_runtime_s": .number(300)]), cpuOnly: false), 7)
    }

    func testALargeFanInStaysLinear() {
        // 2 000 jobs each after all of 2 000 others: 4 M edges.
        let n = 2000
        let all = Array(0..<n)
        let deps = Array(repeating: [Int](), count: n) + Array(repeating: all, count: n)
        let tails = DependencyTails.compute(dependsOn: deps, ownS: Array(repeating: 1, count: 2 * n))
        XCTAssertEqual(tails[0], 1)
        XCTAssertEqual(tails[n], 0)
    }
}
