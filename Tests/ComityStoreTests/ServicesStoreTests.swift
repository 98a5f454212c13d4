import ComityAPI
import ComityCore
import Foundation
import PostgresNIO
import Testing

@testable import ComityStore

@Suite("Services: replicas, spread, scaling, health, endpoints", .enabled(if: TestDatabase.isAvailable, "needs COMITY_TEST_PG_URL (run ops/test)"))
struct ServicesStoreTests {
    let logger = TestDatabase.logger

    static func spec(_ name: String = "llm", project: String = "llm", replicas: Int = 1, restart: ServiceSpec.RestartPolicy = .always) -> JobSpec {
        JobSpec(
            name: name, project: project, kind: .inference, command: ["python3", "-m", "http.server"],
            resources: ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30),
            service: ServiceSpec(replicas: replicas, restart: restart, healthPath: "/"))
    }

    /// Replica jobs of a service: (replica, job, state, host name) in replica order, newest job per replica.
    func replicas(_ client: PostgresClient, service: String = "llm") async throws -> [(replica: Int32, job: Int64, state: String, host: String?)] {
        try await client.query(
            """
            select distinct on (j.replica) j.replica, j.id, j.state, h.name
            from jobs j join services s on s.id = j.service_id
            left join attempts a on a.id = j.current_attempt and a.state in ('assigned', 'running') left join hosts h on h.id = a.host_id
            where s.name = \(service) order by j.replica, j.id desc
            """, logger: logger
        ).decode((Int32, Int64, String, String?).self).collect().map { ($0.0, $0.1, $0.2, $0.3) }
    }

    /// Starts every assigned attempt of `host`, as its agent would; returns the attempts.
    func startAll(_ store: Store, host: Int64) async throws -> [Assignment] {
        let assignments = try await store.assignments(host: host)
        for assignment in assignments { _ = try await store.start(attempt: assignment.attempt, host: host) }
        return assignments
    }

    @Test("a service with replicas: N becomes N replica jobs of one service, each told its index")
    func replicasCreated() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let created = try await seed.store.submitService(Self.spec(replicas: 3), by: seed.admin)
            #expect(created.jobs.count == 3)
            let rows = try await replicas(client)
            #expect(rows.map(\.replica) == [0, 1, 2])
            #expect(rows.allSatisfy { $0.state == "queued" })
            for (index, job) in created.jobs.enumerated() {
                let view = try await seed.state(job)
                #expect(view.spec.env["COMITY_REPLICA"] == String(index))
                #expect(view.spec.env["COMITY_SERVICE"] == "llm")
                #expect(view.kind == .inference)
            }
            let service = try #require(try await seed.store.service("llm", scope: .all))
            #expect(service.replicas == 3)
            #expect(service.replicaJobs.map(\.index) == [0, 1, 2])
            try await seed.store.chainAudit()
            let ledger = try await client.query("select count(*) from audit_log where kind = 'service-created'", logger: logger).decode(Int64.self).collect()
            #expect(ledger == [1])
            // The name is taken while replicas are queued or running.
            await #expect(throws: StoreError.self) { try await seed.store.submitService(Self.spec(replicas: 1), by: seed.admin) }
        }
    }

    @Test("spread: 3 replicas on 2 hosts run on distinct hosts, the third waits with SPREAD; a third host takes it")
    func spread() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            // Each host could hold all three replicas: only the spread rule keeps them apart.
            _ = try await seed.enroll("a", cpus: 16)
            _ = try await seed.enroll("b", cpus: 16)
            _ = try await seed.store.submitService(Self.spec(replicas: 3), by: seed.admin)
            _ = try await seed.store.schedulingPass()
            _ = try await seed.store.schedulingPass()
            var rows = try await replicas(client)
            let placed = rows.filter { $0.host != nil }
            #expect(placed.count == 2)
            #expect(Set(placed.compactMap(\.host)) == ["a", "b"])
            let waiting = try #require(rows.first { $0.host == nil })
            #expect(waiting.state == "queued")
            let why = try #require(try await seed.store.why(job: waiting.job, scope: .all))
            #expect(why.outcome == .pending)
            for verdict in why.hosts {
                #expect(!verdict.eligible)
                #expect(verdict.reasons.contains { $0.code == .spread && $0.category == .capacity }, "\(verdict.host): \(verdict.reasons)")
            }
            #expect(why.summary.contains("SPREAD"), "\(why.summary)")
            // Other jobs are not kept off those hosts.
            let batch = try await seed.submit("batch")
            _ = try await seed.store.schedulingPass()
            #expect(try await seed.state(batch).state == .assigned)

            _ = try await seed.enroll("c", cpus: 16)
            _ = try await seed.store.schedulingPass()
            rows = try await replicas(client)
            #expect(rows.allSatisfy { $0.host != nil })
            #expect(Set(rows.compactMap(\.host)) == ["a", "b", "c"])
        }
    }

    @Test("spread holds within one pass across look-alike hosts (the placer's host groups)")
    func spreadWithinOnePass() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            for index in 0..<5 { _ = try await seed.enroll("h\(index)", cpus: 16) }
            _ = try await seed.store.submitService(Self.spec(replicas: 4), by: seed.admin)
            let result = try await seed.store.schedulingPass()
            #expect(result.placed == 4)
            let hosts = try await replicas(client).compactMap(\.host)
            #expect(hosts.count == 4)
            #expect(Set(hosts).count == 4)
        }
    }

    @Test("scale 1 → 3 adds replica jobs on new hosts; 3 → 1 cancels the highest-numbered")
    func scale() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let hosts = [try await seed.enroll("a"), try await seed.enroll("b"), try await seed.enroll("c")]
            _ = try await seed.store.submitService(Self.spec(replicas: 1), by: seed.admin)
            _ = try await seed.store.schedulingPass()
            for host in hosts { _ = try await startAll(seed.store, host: host.host) }
            let first = try await replicas(client)
            #expect(first.count == 1)

            let up = try #require(try await seed.store.scaleService("llm", replicas: 3, scope: .all, by: seed.admin))
            #expect(up.replicas == 3)
            #expect(up.replicaJobs.map(\.index) == [0, 1, 2])
            #expect(up.replicaJobs[0].job == first[0].job, "the running replica is kept")
            // Each new replica's job has its `submitted` entry, naming the service and the replica.
            let added = try await seed.store.auditEntries(AuditFilter(job: up.replicaJobs[2].job, kind: "submitted"), after: 0, limit: 10)
            #expect(added.count == 1 && added.first?.actor == seed.admin.name && added.first?.partners == ["tum"])
            #expect(added.first?.body.contains("\"service\" : \"llm\"") == true && added.first?.body.contains("\"replica\" : 2") == true, "\(added)")
            _ = try await seed.store.schedulingPass()
            for host in hosts { _ = try await startAll(seed.store, host: host.host) }
            let three = try await replicas(client)
            #expect(three.map(\.state) == ["running", "running", "running"])
            #expect(Set(three.compactMap(\.host)).count == 3)

            let down = try #require(try await seed.store.scaleService("llm", replicas: 1, scope: .all, by: seed.admin))
            #expect(down.replicas == 1)
            // Running replicas are asked to stop (their agents end them); the service shows them as stopping.
            let marked = try await client.query(
                "select replica, cancel_requested from jobs where service_id is not null and state = 'running' order by replica", logger: logger
            ).decode((Int32, Bool).self).collect()
            #expect(marked.map(\.0) == [0, 1, 2])
            #expect(marked.map(\.1) == [false, true, true])
            // The agents stop them and report; the controller does not replace them.
            for job in three.dropFirst() {
                let view = try await seed.state(job.job)
                let host = try #require(hosts.first { $0.agent.name == "agent-\(view.host ?? "")" })
                _ = try await seed.store.finish(attempt: try #require(view.attempt), host: host.host, FinishRequest(outcome: .stopped))
            }
            #expect(try await seed.store.reconcileServices() == Store.ReconcileResult(replaced: 0, cancelled: 0))
            let after = try #require(try await seed.store.service("llm", scope: .all))
            #expect(after.replicaJobs.map(\.index) == [0])
            #expect(after.replicaJobs[0].state == .running)
            try await seed.store.chainAudit()
            let ledger = try await client.query("select count(*) from audit_log where kind = 'service-scaled'", logger: logger).decode(Int64.self).collect()
            #expect(ledger == [2])
            await #expect(throws: StoreError.self) { try await seed.store.scaleService("llm", replicas: 65, scope: .all, by: seed.admin) }
        }
    }

    @Test("the heartbeat stores replicas' health; endpoints list only healthy replicas of this host's attempts")
    func healthAndEndpoints() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let a = try await seed.enroll("a")
            // tum's own host in Kenya (a guest service would need the host partner's donation policy).
            let b = try await seed.enroll("b", region: "ke-nbo-1")
            _ = try await seed.store.submitService(Self.spec(replicas: 2), by: seed.admin)
            _ = try await seed.store.schedulingPass()
            let onA = try #require(try await startAll(seed.store, host: a.host).first)
            let onB = try #require(try await startAll(seed.store, host: b.host).first)
            #expect(try await seed.store.endpoints("llm", scope: .all)?.endpoints.isEmpty == true, "nothing reported yet")

            _ = try await seed.store.heartbeat(
                host: a.host,
                HeartbeatRequest(
                    attempts: [onA.attempt],
                    services: [
                        ServiceStatus(attempt: onA.attempt, url: "http://10.0.0.1:41000", healthy: true, restarts: 2),
                        // Not this host's attempt: ignored.
                        ServiceStatus(attempt: onB.attempt, url: "http://evil:1", healthy: true),
                    ]))
            _ = try await seed.store.heartbeat(
                host: b.host,
                HeartbeatRequest(
                    attempts: [onB.attempt],
                    services: [ServiceStatus(attempt: onB.attempt, url: "http://10.0.0.2:41000", healthy: false, message: "GET / answered 503")]))
            let stored = try await client.query(
                "select id, url, healthy, restarts, health_message, checked_at is not null from attempts order by id", logger: logger
            ).decode((Int64, String?, Bool?, Int32, String?, Bool).self).collect()
            let rowA = try #require(stored.first { $0.0 == onA.attempt })
            let rowB = try #require(stored.first { $0.0 == onB.attempt })
            #expect(rowA.1 == "http://10.0.0.1:41000" && rowA.2 == true && rowA.3 == 2 && rowA.5)
            #expect(rowB.1 == "http://10.0.0.2:41000" && rowB.2 == false && rowB.4 == "GET / answered 503")

            var endpoints = try #require(try await seed.store.endpoints("llm", scope: .all))
            #expect(endpoints.endpoints.map(\.host) == ["a"])
            #expect(endpoints.endpoints.first?.url == "http://10.0.0.1:41000")
            #expect(endpoints.endpoints.first?.jurisdiction == "DE")
            #expect(endpoints.endpoints.first?.region == "eu-de-1")
            #expect(endpoints.endpoints.first?.restarts == 2)

            _ = try await seed.store.heartbeat(
                host: b.host,
                HeartbeatRequest(attempts: [onB.attempt], services: [ServiceStatus(attempt: onB.attempt, url: "http://10.0.0.2:41000", healthy: true)]))
            endpoints = try #require(try await seed.store.endpoints("llm", scope: .all))
            #expect(endpoints.endpoints.map(\.jurisdiction) == ["DE", "KE"])
            let view = try #require(try await seed.store.service("llm", scope: .all))
            #expect(view.healthy == 2)

            // A bad URL is refused, naming the field.
            await #expect(throws: StoreError.self) {
                try await seed.store.heartbeat(
                    host: a.host, HeartbeatRequest(attempts: [onA.attempt], services: [ServiceStatus(attempt: onA.attempt, url: "ftp://x", healthy: true)]))
            }
        }
    }

    @Test("tenancy: only the service's project (and admins, auditors for reading) see it; only members scale or call it")
    func tenancy() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            _ = try await seed.enroll("a")
            let member = try await seed.researcher("llm")
            let outsider = try await seed.researcher("asr")
            let auditor = try await seed.principal(CreateTokenRequest(role: .auditor))
            let owner = try await seed.partnerAdmin("tum")
            let other = try await seed.partnerAdmin("uon")

            await #expect(throws: StoreError.self) { try await seed.store.submitService(Self.spec(), by: outsider) }
            _ = try await seed.store.submitService(Self.spec(), by: member)

            #expect(try await seed.store.services(scope: JobScope(member)).map(\.name) == ["llm"])
            #expect(try await seed.store.services(scope: JobScope(owner)).map(\.name) == ["llm"])
            #expect(try await seed.store.services(scope: JobScope(auditor)).map(\.name) == ["llm"])
            #expect(try await seed.store.services(scope: JobScope(outsider)).isEmpty)
            #expect(try await seed.store.services(scope: JobScope(other)).isEmpty)
            #expect(try await seed.store.service("llm", scope: JobScope(outsider)) == nil)
            #expect(try await seed.store.endpoints("llm", scope: JobScope(outsider)) == nil)
            #expect(try await seed.store.endpoints("llm", scope: JobScope(member)) != nil)
            #expect(try await seed.store.scaleService("llm", replicas: 2, scope: JobScope(outsider), by: outsider) == nil)
            await #expect(throws: StoreError.self) { try await seed.store.scaleService("llm", replicas: 2, scope: JobScope(auditor), by: auditor) }
            #expect(try await seed.store.gatewayTargets("llm", principal: outsider) == nil)
            await #expect(throws: StoreError.self) { try await seed.store.gatewayTargets("llm", principal: auditor) }
            #expect(try await seed.store.gatewayTargets("llm", principal: owner)?.service == "llm")
            #expect(try await seed.store.scaleService("llm", replicas: 2, scope: JobScope(owner), by: owner)?.replicas == 2)

            // The same name in another project: ambiguous for an admin until qualified.
            _ = try await seed.store.submitService(Self.spec(project: "asr"), by: seed.admin)
            await #expect(throws: StoreError.self) { try await seed.store.service("llm", scope: .all) }
            #expect(try await seed.store.service("asr:llm", scope: .all)?.project == "asr")
            #expect(try await seed.store.service("llm", scope: JobScope(member))?.project == "llm")
        }
    }

    @Test("the controller replaces ended replicas by their restart policy, with a back-off, and never above the count")
    func replacement() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let a = try await seed.enroll("a")
            let b = try await seed.enroll("b")
            _ = try await seed.store.submitService(Self.spec(replicas: 1, restart: .always), by: seed.admin)
            _ = try await seed.store.submitService(Self.spec("once", replicas: 1, restart: .onFailure), by: seed.admin)
            _ = try await seed.store.schedulingPass()
            let started = try await startAll(seed.store, host: a.host) + startAll(seed.store, host: b.host)
            #expect(started.count == 2)
            func finish(_ service: String, _ report: FinishRequest) async throws {
                let job = try #require(try await replicas(client, service: service).first)
                let view = try await seed.state(job.job)
                let host = view.host == "a" ? a.host : b.host
                _ = try await seed.store.finish(attempt: try #require(view.attempt), host: host, report)
            }
            // always: an exit 0 is replaced at once (the first end of that replica); on-failure: exit 0 is final.
            try await finish("llm", FinishRequest(outcome: .exited, exitCode: 0))
            try await finish("once", FinishRequest(outcome: .exited, exitCode: 0))
            #expect(try await seed.store.reconcileServices().replaced == 1)
            #expect(try await replicas(client, service: "llm").first?.state == "queued")
            #expect(try await replicas(client, service: "once").first?.state == "succeeded")

            // The replacement ends too: the second end within the window waits 5 s before the next replacement.
            _ = try await seed.store.schedulingPass()
            _ = try await startAll(seed.store, host: a.host)
            _ = try await startAll(seed.store, host: b.host)
            try await finish("llm", FinishRequest(outcome: .error, message: "could not start"))
            #expect(try await seed.store.reconcileServices().replaced == 0)
            #expect(try await replicas(client, service: "llm").first?.state == "failed")
            try await client.query(
                "update jobs set finished_at = finished_at - interval '6 seconds' where service_id is not null and state = 'failed'", logger: logger)
            #expect(try await seed.store.reconcileServices().replaced == 1)
            let jobs = try await client.query(
                "select count(*) from jobs j join services s on s.id = j.service_id where s.name = 'llm'", logger: logger
            ).decode(Int64.self).collect()
            #expect(jobs == [3])
            try await seed.store.chainAudit()
            let events = try await client.query(
                "select count(*) from audit_log where kind = 'submitted' and actor = 'service-controller'", logger: logger
            ).decode(Int64.self).collect()
            #expect(events == [2])
        }
    }

    @Test("scaling to 0 keeps the service; a stopped service's name can be submitted again")
    func scaleToZeroAndResubmit() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            _ = try await seed.store.submitService(Self.spec(replicas: 2), by: seed.admin)
            let zero = try #require(try await seed.store.scaleService("llm", replicas: 0, scope: .all, by: seed.admin))
            #expect(zero.replicas == 0)
            #expect(zero.replicaJobs.isEmpty)
            #expect(try await client.query("select count(*) from jobs where state = 'cancelled'", logger: logger).decode(Int64.self).collect() == [2])
            #expect(try await seed.store.reconcileServices() == Store.ReconcileResult(replaced: 0, cancelled: 0))
            let again = try await seed.store.submitService(Self.spec(replicas: 3), by: seed.admin)
            #expect(again.jobs.count == 3)
            #expect(try await seed.store.service("llm", scope: .all)?.replicas == 3)
        }
    }
}

extension TestDatabase.Seed {
    func principal(_ request: CreateTokenRequest) async throws -> Principal {
        let token = try await store.createToken(request, by: admin).token
        return try #require(try await store.principal(forToken: token))
    }

    func researcher(_ project: String) async throws -> Principal { try await principal(CreateTokenRequest(role: .researcher, project: project)) }

}
