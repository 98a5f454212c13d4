import ComityAPI
import ComityCore
import Foundation
import PostgresNIO
import Testing

@testable import ComityStore

@Suite("An OOM-killed attempt", .enabled(if: TestDatabase.isAvailable, "needs COMITY_TEST_PG_URL (run ops/test)"))
struct OOMKilledStoreTests {
    @Test("an oom_killed finish fails the job at once with the reason OOM_KILLED: …, retries left or not")
    func oomKilledFailsTheJob() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let host = try await seed.enroll("h")
            let job = try await seed.submit("hungry", retries: 2)
            _ = try await seed.store.schedulingPass()
            let attempt = try #require(try await seed.state(job).attempt)
            #expect(try await seed.store.start(attempt: attempt, host: host.host).current)
            let report = FinishRequest(outcome: .oomKilled, message: "memory limit 64Mi exceeded")
            let ack = try await seed.store.finish(attempt: attempt, host: host.host, report)
            #expect(ack.state == .failed)
            let view = try await seed.state(job)
            #expect(view.state == .failed, "no retry: the same limit would end the same way")
            #expect(view.attempts == 1)
            #expect(view.reason == "OOM_KILLED: memory limit 64Mi exceeded")
            let events = try await seed.store.events(job: job)
            #expect(events.last?.kind == "failed")
            #expect(events.last?.message == "OOM_KILLED: memory limit 64Mi exceeded")
            // A repeated report changes nothing.
            _ = try await seed.store.finish(attempt: attempt, host: host.host, report)
            #expect(try await seed.store.events(job: job).count == events.count)
        }
    }
}
