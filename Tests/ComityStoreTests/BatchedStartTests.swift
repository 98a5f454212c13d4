import ComityAPI
import ComityCore
import Foundation
import PostgresNIO
import Synchronization
import Testing

@testable import ComityStore

@Suite("Agent starts written in batches", .enabled(if: TestDatabase.isAvailable, "needs COMITY_TEST_PG_URL (run ops/test)"))
struct BatchedStartTests {
    @Test("many concurrent starts: each assigned attempt starts once, with its event and ledger entry; others are refused")
    func concurrentStarts() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let store = seed.store
            let hosts = [try await seed.enroll("h1", cpus: 16), try await seed.enroll("h2", cpus: 16)]
            for index in 0..<32 { _ = try await seed.submit("j\(index)") }
            #expect(try await store.schedulingPass().placed == 32)
            var attempts: [(attempt: Int64, host: Int64)] = []
            for host in hosts {
                attempts += try await store.assignments(host: host.host).map { ($0.attempt, host.host) }
            }
            #expect(attempts.count == 32)
            // Every attempt is started twice at once (an agent retrying), once more from the wrong host.
            let wrongHost = [hosts[1].host, hosts[0].host]
            let acks = try await withThrowingTaskGroup(of: (Int64, Bool, AttemptAck).self) { group in
                for (attempt, host) in attempts {
                    for _ in 0..<2 { group.addTask { (attempt, true, try await store.start(attempt: attempt, host: host)) } }
                    let other = host == hosts[0].host ? wrongHost[0] : wrongHost[1]
                    group.addTask {
                        do {
                            return (attempt, false, try await store.start(attempt: attempt, host: other))
                        } catch let error as StoreError where error.code == .notFound {
                            return (attempt, false, AttemptAck(current: false, state: .lost))
                        }
                    }
                }
                return try await group.reduce(into: [(Int64, Bool, AttemptAck)]()) { $0.append($1) }
            }
            for (attempt, ownHost, ack) in acks {
                if ownHost {
                    #expect(ack.current && ack.state == .running, "attempt \(attempt)")
                } else {
                    #expect(!ack.current, "attempt \(attempt) started from another host")
                }
            }
            #expect(try await client.number("select count(*) from jobs where state = 'running'") == 32)
            #expect(try await client.number("select count(*) from job_events where kind = 'running'") == 32)
            try await store.chainAudit()
            #expect(try await client.number("select count(*) from audit_log where kind = 'started'") == 32)
        }
    }

    @Test("many concurrent end reports, repeated and from the wrong host: each attempt ends once, jobs follow their retries")
    func concurrentEnds() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let store = seed.store
            let hosts = [try await seed.enroll("h1", cpus: 16), try await seed.enroll("h2", cpus: 16)]
            var jobs: [Int64] = []
            for index in 0..<32 { jobs.append(try await seed.submit("j\(index)", retries: index % 4 == 1 ? 1 : 0)) }
            #expect(try await store.schedulingPass().placed == 32)
            var attempts: [(attempt: Int64, job: Int64, host: Int64)] = []
            for host in hosts {
                for assignment in try await store.assignments(host: host.host) {
                    _ = try await store.start(attempt: assignment.attempt, host: host.host)
                    attempts.append((assignment.attempt, assignment.jobId, host.host))
                }
            }
            // Job index % 4: 0 exits 0, 1 the agent errs with a retry left (requeued), 2 exits 3 (failed), 3 the agent
            // errs without retries (failed).
            var reports: [Int64: FinishRequest] = [:]
            for (index, job) in jobs.enumerated() {
                reports[job] = switch index % 4 {
                case 0: FinishRequest(outcome: .exited, exitCode: 0)
                case 1: FinishRequest(outcome: .error, message: "image pull failed")
                case 2: FinishRequest(outcome: .exited, exitCode: 3)
                default: FinishRequest(outcome: .error, message: "no such file")
                }
            }
            let report = reports
            let acks = try await withThrowingTaskGroup(of: (Int64, Bool, AttemptAck?).self) { group in
                for (attempt, job, host) in attempts {
                    let other = host == hosts[0].host ? hosts[1].host : hosts[0].host
                    for _ in 0..<2 { group.addTask { (job, true, try await store.finish(attempt: attempt, host: host, report[job]!)) } }
                    group.addTask {
                        do {
                            return (job, false, try await store.finish(attempt: attempt, host: other, report[job]!))
                        } catch let error as StoreError where error.code == .notFound {
                            return (job, false, nil)
                        }
                    }
                }
                return try await group.reduce(into: [(Int64, Bool, AttemptAck?)]()) { $0.append($1) }
            }
            for (job, ownHost, ack) in acks {
                if ownHost {
                    #expect(ack?.current == false && ack?.state.isTerminal == true, "job \(job)")
                } else {
                    #expect(ack == nil, "job \(job): another host's report was taken")
                }
            }
            for (index, job) in jobs.enumerated() {
                let view = try await seed.state(job)
                let expected: [JobState] = [.succeeded, .queued, .failed, .failed]
                #expect(view.state == expected[index % 4], "job \(index)")
            }
            #expect(try await client.number("select count(*) from job_events where kind in ('succeeded', 'failed') and attempt_id is not null") == 32)
            try await store.chainAudit()
            #expect(try await client.number("select count(*) from audit_log where kind = 'ended'") == 32)
        }
    }

    @Test("the pull's JSON, with specs spliced in as stored, decodes to exactly the typed assignments")
    func rawPullMatchesTyped() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let store = seed.store
            let gpus = (0..<2).map { GPU(index: $0, uuid: "GPU-\($0)-a\"b", model: "NVIDIA H100 80GB HBM3", memoryBytes: 80 << 30) }
            let host = try await seed.enroll("h1", cpus: 8, gpus: gpus)
            let specs = [
                JobSpec(
                    name: "quotes", project: "llm", command: ["sh", "-c", #"echo "é ✓ \\ \n" > out"#], env: ["A": "1", "B_\u{1F600}": "x\"y"],
                    resources: ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30, gpus: 1), retries: 2, priority: 70, network: false),
                JobSpec(name: "plain", project: "llm", command: ["true"], resources: ResourceRequest(cpuMillis: 500, memoryBytes: 1 << 20)),
            ]
            _ = try await store.submit(specs, by: seed.admin)
            #expect(try await store.schedulingPass().placed == 2)
            let raw = try await store.rawAssignments(host: host.host)
            let typed = try await store.assignments(host: host.host)
            #expect(raw.count == 2)
            let decoder = WireJSON.sharedDecoder
            let fromRaw = try decoder.decode(AssignmentList.self, from: Data(try RawAssignment.listJSON(raw).utf8)).assignments
            // What the typed list looks like to an agent (dates travel with millisecond precision).
            let fromTyped = try decoder.decode(AssignmentList.self, from: try WireJSON.shared.encode(AssignmentList(assignments: typed))).assignments
            #expect(fromRaw == fromTyped)
            #expect(fromRaw.map(\.spec) == specs)
            #expect(fromRaw.first?.gpuUuids.count == 1)
        }
    }
}
