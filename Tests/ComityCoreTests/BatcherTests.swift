import Synchronization
import Testing

@testable import ComityCore

@Suite("Requests run together in batches")
struct BatcherTests {
    @Test("concurrent requests each get their own answer, share batches, and a failed batch fails every request in it")
    func answersAndFailures() async throws {
        let sizes = Mutex<[Int]>([])
        let (gate, open) = AsyncStream.makeStream(of: Void.self)
        let holdFirst = Mutex(true)
        let batcher = Batcher<Int, Int>(limit: 8) { batch in
            sizes.withLock { $0.append(batch.count) }
            // The first batch is held until every other request waits behind it (the batcher itself never waits).
            if holdFirst.withLock({ held in defer { held = false }; return held }) {
                for await _ in gate { break }
            }
            if batch.contains(-1) { throw CancellationError() }
            return batch.map { $0 * 10 }
        }
        let answers = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for n in 1...50 { group.addTask { (n, try await batcher.submit(n)) } }
            // The first batch holds whatever was pending when it was taken (one request, or a few that arrived
            // at once); every other request must be waiting behind it before it is let go.
            let deadline = ContinuousClock.now + .seconds(30)
            func heldAndWaiting() -> Bool {
                guard let first = sizes.withLock({ $0.first }) else { return false }
                return batcher.waiting == 50 - first
            }
            while !heldAndWaiting(), ContinuousClock.now < deadline { await Task.yield() }
            #expect(heldAndWaiting())
            open.yield()
            return try await group.reduce(into: [Int: Int]()) { $0[$1.0] = $1.1 }
        }
        #expect(answers == Dictionary(uniqueKeysWithValues: (1...50).map { ($0, $0 * 10) }))
        let seen = sizes.withLock { $0 }
        #expect(seen.reduce(0, +) == 50)
        // One held batch, then the requests that waited behind it in batches of 8 (the last one holds the rest).
        let rest = 50 - (seen.first ?? 0)
        let expected = [seen.first ?? 0] + Array(repeating: 8, count: rest / 8) + (rest % 8 > 0 ? [rest % 8] : [])
        #expect(seen == expected)
        // A batch that fails fails all of its requests, and the batcher keeps working.
        await #expect(throws: CancellationError.self) { _ = try await batcher.submit(-1) }
        #expect(try await batcher.submit(7) == 70)
    }

    @Test("a group submitted together runs in one batch, past the limit, and each of its callers gets its own answers")
    func groups() async throws {
        let batches = Mutex<[[Int]]>([])
        let (gate, open) = AsyncStream.makeStream(of: Void.self)
        let holdFirst = Mutex(true)
        let batcher = Batcher<Int, Int>(limit: 4) { batch in
            batches.withLock { $0.append(batch) }
            if holdFirst.withLock({ held in defer { held = false }; return held }) {
                for await _ in gate { break }
            }
            return batch.map { -$0 }
        }
        async let held = batcher.submit(0)
        let deadline = ContinuousClock.now + .seconds(30)
        while batches.withLock({ $0.isEmpty }), ContinuousClock.now < deadline { await Task.yield() }
        // Behind the held batch: a single, a group of 6 (more than the limit), a group of 2, a single.
        async let one = batcher.submit(1)
        while batcher.waiting < 1, ContinuousClock.now < deadline { await Task.yield() }
        async let six = batcher.submit([10, 11, 12, 13, 14, 15])
        while batcher.waiting < 7, ContinuousClock.now < deadline { await Task.yield() }
        async let two = batcher.submit([20, 21])
        while batcher.waiting < 9, ContinuousClock.now < deadline { await Task.yield() }
        async let last = batcher.submit(3)
        while batcher.waiting < 10, ContinuousClock.now < deadline { await Task.yield() }
        open.yield()
        #expect(try await held == 0)
        #expect(try await one == -1)
        #expect(try await six == [-10, -11, -12, -13, -14, -15])
        #expect(try await two == [-20, -21])
        #expect(try await last == -3)
        // The single leads a batch the group of 6 does not fit in; the group runs whole, alone; then the rest.
        #expect(batches.withLock { $0 } == [[0], [1], [10, 11, 12, 13, 14, 15], [20, 21, 3]])
        #expect(try await batcher.submit([Int]()) == [])
    }
}
