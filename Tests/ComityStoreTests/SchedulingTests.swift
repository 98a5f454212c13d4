import ComityAPI
import ComityCore
import Foundation
import PostgresNIO
import Testing

@testable import ComityStore

@Suite("Scheduling, leases and fencing", .enabled(if: TestDatabase.isAvailable, "needs COMITY_TEST_PG_URL (run ops/test)"))
struct SchedulingTests {
    let logger = TestDatabase.logger

    @Test("concurrent passes from many replicas never give one job two attempts nor overfill a host")
    func concurrentPassesNeverDoubleAssign() async throws {
        try await TestDatabase.withDatabase { client, database in
            let seed = try await TestDatabase.seeded(client)
            for index in 0..<6 {
                let gpus = (0..<4).map { GPU(index: $0, uuid: "GPU-\(index)-\($0)", model: "NVIDIA H100", memoryBytes: 80 << 30) }
                _ = try await seed.enroll("h\(index)", cpus: 8, gpus: index.isMultiple(of: 2) ? gpus : [])
            }
            for index in 0..<300 {
                _ = try await seed.submit("j\(index)", cpus: 1 + index % 3, gpus: index % 5 == 0 ? 1 + index % 2 : 0, priority: index % 7)
            }
            // Six replicas, each with its own pool, run passes at the same time until nothing more fits.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<6 {
                    group.addTask {
                        try await PostgresClient.with(try database.clientConfiguration(maxConnections: 2), logger: logger) { replica in
                            let store = Store(client: replica, logger: logger)
                            for _ in 0..<5 { _ = try await store.schedulingPass() }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let doubled = try await client.query(
                "select count(*) from (select job_id from attempts group by job_id having count(*) > 1) d", logger: logger
            ).decode(Int64.self).collect()
            #expect(doubled == [0])
            let overfull = try await client.query(
                """
                select count(*) from hosts h join lateral (
                    select coalesce(sum(cpu_millis), 0) cpu, coalesce(sum(memory_bytes), 0) mem from attempts a
                    where a.host_id = h.id and a.state in ('assigned', 'running')) u on true
                where u.cpu > h.cpu_millis or u.mem > h.memory_bytes
                """, logger: logger
            ).decode(Int64.self).collect()
            #expect(overfull == [0])
            let sharedGPUs = try await client.query(
                """
                select count(*) from (
                    select a.host_id, g from attempts a, unnest(a.gpu_indices) g
                    where a.state in ('assigned', 'running') group by a.host_id, g having count(*) > 1) s
                """, logger: logger
            ).decode(Int64.self).collect()
            #expect(sharedGPUs == [0])
            let placed = try await client.query("select count(*) from jobs where state = 'assigned'", logger: logger).decode(Int64.self).collect()[0]
            // 6 hosts × 8 CPUs = 48 CPUs; every host must be (nearly) full: nothing that fits was left behind.
            let usedCPU = try await client.query(
                "select coalesce(sum(cpu_millis), 0)::bigint from attempts where state = 'assigned'", logger: logger
            ).decode(Int64.self).collect()[0]
            #expect(placed > 0)
            #expect(usedCPU >= 40_000)
        }
    }

    @Test("the head of the queue goes first: higher priority, then submission order")
    func priorityThenSubmissionOrder() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            _ = try await seed.enroll("small", cpus: 2)
            let low = try await seed.submit("low", cpus: 1, priority: 10)
            let first = try await seed.submit("first", cpus: 1, priority: 90)
            let second = try await seed.submit("second", cpus: 1, priority: 90)
            let result = try await seed.store.schedulingPass()
            #expect(result.placed == 2)
            #expect(try await seed.state(first).state == .assigned)
            #expect(try await seed.state(second).state == .assigned)
            #expect(try await seed.state(low).state == .queued)
        }
    }

    @Test("a GPU job goes only to a host with a matching GPU, and gets exactly the GPUs recorded")
    func gpuPlacement() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            _ = try await seed.enroll("cpu-only", cpus: 64)
            let a100 = try await seed.enroll("a100", gpus: [GPU(index: 0, uuid: "GPU-a", model: "NVIDIA A100-SXM4-40GB", memoryBytes: 40 << 30)])
            let h100 = try await seed.enroll(
                "h100", gpus: (0..<2).map { GPU(index: $0, uuid: "GPU-h\($0)", model: "NVIDIA H100 80GB HBM3", memoryBytes: 80 << 30) })
            let spec = JobSpec(
                name: "train", project: "llm", command: ["true"],
                resources: ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30, gpus: 2, gpuModel: "h100"))
            let job = try await seed.store.submit([spec], by: seed.admin)[0]
            _ = try await seed.store.schedulingPass()
            let view = try await seed.state(job)
            #expect(view.state == .assigned)
            #expect(view.host == "h100")
            #expect(view.gpuIndices == [0, 1])
            let assignments = try await seed.store.assignments(host: h100.host)
            #expect(assignments.map(\.gpuUuids) == [["GPU-h0", "GPU-h1"]])
            #expect(try await seed.store.assignments(host: a100.host).isEmpty)
        }
    }

    @Test("an expired lease requeues the job; the stale attempt cannot overwrite the newer one")
    func leaseExpiryAndFencing() async throws {
        try await TestDatabase.withDatabase { client, _ in
            var configuration = Store.Configuration()
            configuration.leaseSeconds = 30
            let seed = try await TestDatabase.seeded(client, configuration: configuration)
            let first = try await seed.enroll("first")
            let job = try await seed.submit("flaky", retries: 1)
            _ = try await seed.store.schedulingPass()
            let attempt1 = try #require(try await seed.state(job).attempt)
            #expect(try await seed.store.start(attempt: attempt1, host: first.host).current)
            // Another host cannot start or finish an attempt that is not its own.
            let other = try await seed.enroll("other")
            await #expect(throws: StoreError.self) { try await seed.store.start(attempt: attempt1, host: other.host) }
            // The first agent vanishes: its lease runs out.
            try await client.query("update attempts set lease_expires_at = now() - interval '1 second' where id = \(attempt1)", logger: logger)
            #expect(try await seed.store.reap() == 1)
            #expect(try await seed.state(job).state == .queued)
            _ = try await seed.store.schedulingPass()
            let view = try await seed.state(job)
            let attempt2 = try #require(view.attempt)
            #expect(attempt2 != attempt1)
            // The stale agent comes back and reports success for its old attempt: it is told it is not current,
            // and the job keeps following the new attempt.
            let ack = try await seed.store.finish(attempt: attempt1, host: first.host, FinishRequest(outcome: .exited, exitCode: 0))
            #expect(!ack.current)
            #expect(ack.state == .lost)
            let after = try await seed.state(job)
            #expect(after.state == .assigned)
            #expect(after.attempt == attempt2)
            // Its heartbeat is told to stop the stale attempt, and renews nothing.
            #expect(try await seed.store.heartbeat(host: first.host, HeartbeatRequest(attempts: [attempt1])) == [attempt1])
        }
    }

    @Test("a host whose agent went silent is taken out of placement when its lease expires")
    func silentHostGoesDown() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let dead = try await seed.enroll("dead", cpus: 64)
            let job = try await seed.submit("retry-me", retries: 1)
            _ = try await seed.store.schedulingPass()
            #expect(try await seed.state(job).host == "dead")
            _ = try await seed.enroll("alive", cpus: 2)
            try await client.query(
                "update attempts set lease_expires_at = now() - interval '1 second' where host_id = \(dead.host)", logger: logger)
            try await client.query("update hosts set last_heartbeat = now() - interval '1 minute' where id = \(dead.host)", logger: logger)
            try await seed.store.reap()
            #expect(try await seed.store.hosts(hostID: dead.host).first?.state == .down)
            _ = try await seed.store.schedulingPass()
            #expect(try await seed.state(job).host == "alive", "the requeued job must not go back to the silent host")
            // Its next heartbeat brings the host back.
            _ = try await seed.store.heartbeat(host: dead.host, HeartbeatRequest(attempts: []))
            #expect(try await seed.store.hosts(hostID: dead.host).first?.state == .active)
        }
    }

    @Test("without retries left, a lost attempt fails the job")
    func lostWithoutRetriesFails() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            _ = try await seed.enroll("h")
            let job = try await seed.submit("once", retries: 0)
            _ = try await seed.store.schedulingPass()
            try await client.query("update attempts set lease_expires_at = now() - interval '1 second'", logger: logger)
            try await seed.store.reap()
            let view = try await seed.state(job)
            #expect(view.state == .failed)
            #expect(view.reason?.contains("lost") == true)
        }
    }

    @Test("cancel: a queued job ends at once; a running job is stopped through its agent")
    func cancel() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let queued = try await seed.submit("waiting")
            #expect(try await seed.store.cancel(job: queued, scope: .all, by: seed.admin)?.state == .cancelled)

            let host = try await seed.enroll("h")
            let job = try await seed.submit("long")
            _ = try await seed.store.schedulingPass()
            let attempt = try #require(try await seed.state(job).attempt)
            _ = try await seed.store.start(attempt: attempt, host: host.host)
            let marked = try #require(try await seed.store.cancel(job: job, scope: .all, by: seed.admin))
            #expect(marked.state == .running)
            #expect(marked.cancelRequested)
            #expect(try await seed.store.heartbeat(host: host.host, HeartbeatRequest(attempts: [attempt])) == [attempt])
            let ack = try await seed.store.finish(attempt: attempt, host: host.host, FinishRequest(outcome: .stopped, exitCode: 143))
            #expect(!ack.current)
            #expect(try await seed.state(job).state == .cancelled)
            // Idempotent: a repeated report changes nothing.
            _ = try await seed.store.finish(attempt: attempt, host: host.host, FinishRequest(outcome: .exited, exitCode: 0))
            #expect(try await seed.state(job).state == .cancelled)
        }
    }

    @Test(
        "the pass's write places only jobs still queued: one cancelled after the head was read gets no attempt, event or audit entry",
        arguments: [3, 40])  // the prepared write (up to Store.preparedWriteLimit placements) and the one planned for its arrays
    func writeSkipsJobsNoLongerQueued(count: Int) async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let host = try await seed.enroll("h", cpus: 64, memory: 256 << 30)
            var jobs: [Int64] = []
            for index in 0..<count { jobs.append(try await seed.submit("j\(index)")) }
            let cancelled = jobs[1]
            _ = try await seed.store.cancel(job: cancelled, scope: .all, by: seed.admin)
            let placements = jobs.map {
                SharingRound.Placed(
                    placement: Placement(jobID: $0, hostID: host.host, gpuIndices: []), partnerID: 0, projectID: 0, holding: .zero,
                    guest: false, borrowed: false)
            }
            // The host's facts, as the pass's pool reads them.
            let (name, region, partner) = try #require(
                try await client.query("select h.name, h.region, p.name from hosts h join partners p on p.id = h.partner_id where h.id = \(host.host)", logger: TestDatabase.logger)
                    .decode((String, String, String).self).collect().first)
            let facts = HostFacts(id: host.host, name: name, partner: partner, region: region, jurisdiction: "DE", labels: [:])
            let (placed, woken) = try await seed.store.transaction { connection in
                try await seed.store.write(placements, hosts: [host.host: facts], policyVersion: "v-test", on: connection)
            }
            #expect(placed == count - 1)
            #expect(woken == [host.host])
            #expect(try await seed.state(cancelled).state == .cancelled)
            #expect(try await client.number("select count(*) from attempts where job_id = \(cancelled)") == 0)
            #expect(try await client.number("select count(*) from job_events where job_id = \(cancelled) and kind = 'assigned'") == 0)
            // Every other job is assigned to its one attempt, which carries the job's numbers; one event and one
            // audit entry each.
            let others = jobs.filter { $0 != cancelled }
            #expect(
                try await client.number(
                    """
                    select count(*) from jobs j join attempts a on a.id = j.current_attempt
                    where j.id = any(\(others)) and j.state = 'assigned' and j.attempts = 1 and a.job_id = j.id and a.number = 1
                      and a.host_id = \(host.host) and a.state = 'assigned' and a.cpu_millis = j.cpu_millis and a.policy_version = 'v-test'
                    """) == Int64(count - 1))
            #expect(try await client.number("select count(*) from attempts") == Int64(count - 1))
            #expect(try await client.number("select count(*) from job_events where kind = 'assigned' and job_id = any(\(others))") == Int64(count - 1))
            // The event and the entry name the host as the pool knew it.
            let message = "try 1: assigned to \(name) (\(region)) under rules v-test"
            #expect(try await client.number("select count(*) from job_events where kind = 'assigned' and message = \(message)") == Int64(count - 1))
            #expect(
                try await client.number(
                    """
                    select count(*) from (select kind, job_id, host_id, region, partners from audit_pending
                                          union all select kind, job_id, host_id, region, partners from audit_log) e
                    where e.kind = 'placed' and e.host_id = \(host.host) and e.region = \(region) and \(partner) = any(e.partners)
                    """) == Int64(count - 1))
        }
    }

    @Test("logs: a chunk is stored once however often it is sent; output past the bound is dropped and flagged")
    func logsAreIdempotentAndBounded() async throws {
        try await TestDatabase.withDatabase { client, _ in
            var configuration = Store.Configuration()
            configuration.logLimitBytes = 10
            let seed = try await TestDatabase.seeded(client, configuration: configuration)
            let host = try await seed.enroll("h")
            let job = try await seed.submit("chatty")
            _ = try await seed.store.schedulingPass()
            let attempt = try #require(try await seed.state(job).attempt)
            _ = try await seed.store.start(attempt: attempt, host: host.host)
            _ = try await seed.store.appendLog(attempt: attempt, host: host.host, LogAppend(seq: 1, stream: .stdout, data: "hello\n"))
            _ = try await seed.store.appendLog(attempt: attempt, host: host.host, LogAppend(seq: 1, stream: .stdout, data: "hello\n"))
            _ = try await seed.store.appendLog(attempt: attempt, host: host.host, LogAppend(seq: 2, stream: .stderr, data: "too much output\n"))
            let page = try await seed.store.logs(job: job, after: 0)
            #expect(page.chunks.map(\.data) == ["hello\n"])
            #expect(page.truncated)
        }
    }

    @Test("tokens: only the hash is stored; unknown and revoked tokens resolve to nobody")
    func tokens() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let created = try await seed.store.createToken(CreateTokenRequest(role: .researcher, project: "llm"), by: seed.admin)
            let principal = try #require(try await seed.store.principal(forToken: created.token))
            #expect(principal.role == .researcher)
            #expect(principal.project == "llm")
            #expect(principal.partner == "tum")
            let stored = try await client.query("select count(*) from api_tokens where token_hash::text like '%' || \(created.token) || '%'", logger: logger)
                .decode(Int64.self).collect()
            #expect(stored == [0])
            #expect(try await seed.store.principal(forToken: created.token + "x") == nil)
            try await client.query("update api_tokens set revoked_at = now() where id = \(created.id)", logger: logger)
            #expect(try await seed.store.principal(forToken: created.token) == nil)
        }
    }

    @Test("a join token enrolls exactly one host")
    func joinTokenIsOneTime() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let join = try await seed.store.createJoinToken(CreateJoinTokenRequest(partner: "uon", region: "ke-nbo-1"), by: seed.admin)
            let request = EnrollRequest(joinToken: join.token, name: "ke1", resources: HostResources(cpuMillis: 4000, memoryBytes: 1 << 30), agentVersion: "t")
            let enrolled = try await seed.store.enroll(request)
            #expect(enrolled.hostId > 0)
            let error = await #expect(throws: StoreError.self) { try await seed.store.enroll(request) }
            #expect(error?.field == "join_token")
            let hosts = try await seed.store.hosts()
            #expect(hosts.map(\.name) == ["ke1"])
            #expect(hosts.first?.jurisdiction == "KE")
        }
    }

    @Test("a researcher sees its own project's jobs only")
    func scopes() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let mine = try await seed.submit("mine", project: "llm")
            let theirs = try await seed.submit("theirs", project: "asr")
            let token = try await seed.store.createToken(CreateTokenRequest(role: .researcher, project: "llm"), by: seed.admin)
            let researcher = try #require(try await seed.store.principal(forToken: token.token))
            let scope = JobScope(researcher)
            #expect(try await seed.store.jobs(scope: scope, state: nil, project: nil, limit: 100).map(\.id) == [mine])
            #expect(try await seed.store.job(theirs, scope: scope) == nil)
            #expect(try await seed.store.cancel(job: theirs, scope: scope, by: researcher) == nil)
            #expect(try await seed.state(theirs).state == .queued)
            let error = await #expect(throws: StoreError.self) {
                try await seed.store.submit([JobSpec(name: "x", project: "asr", command: ["true"], resources: .init(cpuMillis: 1000, memoryBytes: 1))], by: researcher)
            }
            #expect(error?.code == .forbidden)
        }
    }

    @Test("the pass keeps its hosts only while they are unchanged: new resources, a new host, a silent one and a drained one are seen")
    func poolFollowsInventory() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let store = seed.store
            let first = try await seed.enroll("h1", cpus: 2)
            for index in 0..<6 { _ = try await seed.submit("j\(index)") }
            #expect(try await store.schedulingPass().placed == 2)
            // A plain heartbeat leaves the inventory's version alone; new resources move it, and the next pass uses them.
            let version = { try await client.number("select inventory_version from hosts where id = \(first.host)") }
            // So does the pool's generation: a pass that finds it unmoved does not even read the live hosts.
            let generation = { try await client.number("select sum(generation)::bigint from pool_state") }
            let before = try await version()
            let generationBefore = try await generation()
            _ = try await store.heartbeat(host: first.host, HeartbeatRequest(attempts: []))
            #expect(try await version() == before)
            #expect(try await generation() == generationBefore)
            #expect(try await store.schedulingPass().placed == 0)
            _ = try await store.heartbeat(
                host: first.host, HeartbeatRequest(attempts: [], resources: HostResources(cpuMillis: 3000, memoryBytes: 32 << 30, gpus: [])))
            #expect(try await version() != before)
            #expect(try await generation() != generationBefore)
            #expect(try await store.schedulingPass().placed == 1)
            // A new host joins the pool.
            let second = try await seed.enroll("h2", cpus: 2)
            #expect(try await store.schedulingPass().placed == 2)
            // A host that stopped heartbeating leaves it once the reaper marked it down: its jobs end and the new ones go
            // to the other host only.
            try await client.query("update hosts set last_heartbeat = now() - interval '1 hour' where id = \(second.host)", logger: TestDatabase.logger)
            try await store.reap()
            try await client.query("update attempts set state = 'succeeded', ended_at = now() where host_id = \(second.host)", logger: TestDatabase.logger)
            #expect(try await store.schedulingPass().placed == 0)
            try await client.query("update attempts set state = 'succeeded', ended_at = now() where host_id = \(first.host)", logger: TestDatabase.logger)
            #expect(try await store.schedulingPass().placed == 1)
            let hosts = try await client.query(
                "select distinct host_id from attempts where state = 'assigned'", logger: TestDatabase.logger).decode(Int64.self).collect()
            #expect(hosts == [first.host])
            // A host whose state takes it out of the pool (draining) leaves at once.
            try await client.query("update attempts set state = 'succeeded', ended_at = now() where host_id = \(first.host)", logger: TestDatabase.logger)
            try await client.query("update hosts set state = 'draining' where id = \(first.host)", logger: TestDatabase.logger)
            _ = try await seed.submit("j6")
            #expect(try await store.schedulingPass().placed == 0)
        }
    }
}
