import ComityAPI
import ComityCore
import Foundation
import PostgresNIO
import Testing

@testable import ComityStore

/// Issue 7 in the store: the hosts' runner (`hosts.runner`) reaches the rules in the pass, `why`, the agent's claim
/// and rule changes; a job's `network: true` (in its spec) reaches them too.
@Suite("Sandbox and network rules in the store", .enabled(if: TestDatabase.isAvailable, "needs COMITY_TEST_PG_URL (run ops/test)"))
struct SandboxStoreTests {
    typealias Sovereign = SovereigntyStoreTests.Sovereign

    func submit(_ pool: Sovereign, _ name: String, inputs: [String] = ["ke-health"], network: Bool? = nil) async throws -> Int64 {
        let spec = JobSpec(
            name: name, project: "asr", command: ["true"], resources: ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30),
            inputs: inputs, network: network)
        return try await pool.store.submit([spec], by: pool.seed.admin)[0]
    }

    @Test("a job with health data waits with SANDBOX_REQUIRED while only process hosts exist, and runs when a sandbox host joins")
    func waitsForSandbox() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let pool = try await Sovereign.make(client)
            _ = try await pool.seed.enroll("ke-plain", partner: "uon", region: "ke-nbo-1")
            let health = try await submit(pool, "health")
            let open = try await submit(pool, "open", inputs: [])
            _ = try await pool.store.schedulingPass()
            #expect(try await pool.seed.state(health).state == .queued)
            // Public data still runs on a process host.
            #expect(try await pool.host(of: open) == "ke-plain")
            let why = try #require(try await pool.store.why(job: health, scope: .all))
            #expect(why.outcome == .pending)
            #expect(why.summary == "0/1 hosts eligible: 1 SANDBOX_REQUIRED(ke-health: sandbox hosts only)", "\(why.summary)")
            let reason = try #require(why.hosts.first?.reasons.first)
            #expect(reason.code == .sandboxRequired && reason.rule == "dataset/ke-health@v1")
            #expect(reason.detail.contains("ke-plain runs them with the process runner"))
            #expect(why.waysOut == ["would be eligible on 1 host if it ran jobs in the sandbox (comity-agent --runner sandbox)"])

            _ = try await pool.seed.enroll("ke-box", partner: "uon", region: "ke-nbo-1", runner: .sandbox)
            _ = try await pool.store.schedulingPass()
            #expect(try await pool.host(of: health) == "ke-box")
            let placed = try #require(try await pool.store.why(job: health, scope: .all))
            #expect(placed.outcome == .placed && placed.placedOn == "ke-box")
        }
    }

    @Test("a host that stops sandboxing before the claim gets no job with health data")
    func claimRechecksRunner() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let pool = try await Sovereign.make(client)
            let box = try await pool.seed.enroll("ke-box", partner: "uon", region: "ke-nbo-1", runner: .sandbox)
            let health = try await submit(pool, "health")
            _ = try await pool.store.schedulingPass()
            #expect(try await pool.host(of: health) == "ke-box")
            // The agent came back without the sandbox and said so in its heartbeat.
            _ = try await pool.store.heartbeat(
                host: box.host,
                HeartbeatRequest(
                    attempts: [],
                    resources: HostResources(cpuMillis: 8000, memoryBytes: 32 << 30, runtime: HostRuntime(runner: .process, available: [.process]))))
            #expect(try await pool.store.assignments(host: box.host).isEmpty)
            let refused = try await pool.seed.state(health)
            #expect(refused.state == .queued)
            #expect(refused.reason?.hasPrefix("claim refused: SANDBOX_REQUIRED(ke-health)") == true, "\(String(describing: refused.reason))")
        }
    }

    @Test("network: a job asking for it is rejected unless its data allows it; a rule that withdraws it stops the running job")
    func network() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let pool = try await Sovereign.make(client)
            let box = try await pool.seed.enroll("ke-box", partner: "uon", region: "ke-nbo-1", runner: .sandbox)
            let rejected = await #expect(throws: StoreError.self) { _ = try await submit(pool, "online", network: true) }
            #expect(rejected?.message.contains("E_NETWORK(ke-health)") == true, "\(String(describing: rejected))")

            let allowing: JSONValue = [
                "kind": "dataset", "name": "ke-health", "steward": "uon", "class": "health", "residency": ["allow": ["KE"]],
                "network": "allow",
            ]
            try await pool.apply(allowing, by: pool.uon)
            let online = try await submit(pool, "online", network: true)
            let offline = try await submit(pool, "offline")
            _ = try await pool.store.schedulingPass()
            #expect(try await pool.host(of: online) == "ke-box")
            #expect(try await pool.host(of: offline) == "ke-box")
            let assigned = try await pool.store.assignments(host: box.host)
            #expect(Set(assigned.map(\.jobId)) == [online, offline])
            #expect(assigned.first { $0.jobId == online }?.spec.network == true)
            for assignment in assigned { _ = try await pool.store.start(attempt: assignment.attempt, host: box.host) }

            // The steward withdraws it: the job with the network is stopped at once, the other runs on.
            var denying = allowing
            if case .object(var fields) = denying {
                fields["network"] = "deny"
                denying = .object(fields)
            }
            let applied = try await pool.apply(denying, by: pool.uon)
            #expect(applied.impact.stopped.map(\.id) == [online])
            let stopped = try await pool.seed.state(online)
            #expect(stopped.state == .queued && stopped.reason == "rule change: E_NETWORK(ke-health)", "\(String(describing: stopped.reason))")
            #expect(try await pool.seed.state(offline).state == .running)
            // It is not placed again; why says so.
            _ = try await pool.store.schedulingPass()
            #expect(try await pool.seed.state(online).state == .queued)
            let why = try #require(try await pool.store.why(job: online, scope: .all))
            #expect(why.jobReasons.map(\.label) == ["E_NETWORK(ke-health)"])
        }
    }
}
