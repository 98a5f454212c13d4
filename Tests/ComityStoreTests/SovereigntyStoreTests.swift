import ComityAPI
import ComityCore
import Foundation
import PostgresNIO
import Testing

@testable import ComityStore

@Suite("Sovereignty in the store: the database's own check, placement, rule changes", .enabled(if: TestDatabase.isAvailable, "needs COMITY_TEST_PG_URL (run ops/test)"))
struct SovereigntyStoreTests {
    let logger = TestDatabase.logger

    /// The seeded federation plus partner admins of tum and uon, a KE-only health dataset, and tum lending its hosts
    /// to every guest.
    struct Sovereign {
        var seed: TestDatabase.Seed
        var uon: Principal
        var tum: Principal
        var store: Store { seed.store }

        static func make(_ client: PostgresClient) async throws -> Sovereign {
            let seed = try await TestDatabase.seeded(client)
            let store = seed.store
            let sovereign = Sovereign(seed: seed, uon: try await seed.partnerAdmin("uon"), tum: try await seed.partnerAdmin("tum"))
            try await sovereign.apply(["kind": "dataset", "name": "ke-health", "steward": "uon", "class": "health", "residency": ["allow": ["KE"]]], by: sovereign.uon)
            try await sovereign.apply(["kind": "donor-policy", "name": "tum", "permit": [["id": "everyone"]]], by: sovereign.tum)
            return sovereign
        }

        @discardableResult
        func apply(_ document: JSONValue, by principal: Principal, dryRun: Bool = false) async throws -> PolicyApplyResult {
            try await store.apply(PolicyApplyRequest(document: document, dryRun: dryRun), by: principal)
        }

        func submit(_ name: String, inputs: [String] = ["ke-health"], cpus: Int = 1, maxRuntime: Int64 = 3600) async throws -> Int64 {
            let spec = JobSpec(
                name: name, project: "asr", command: ["true"], resources: ResourceRequest(cpuMillis: cpus * 1000, memoryBytes: 1 << 30),
                inputs: inputs, maxRuntimeSeconds: maxRuntime)
            return try await store.submit([spec], by: seed.admin)[0]
        }

        func host(of job: Int64) async throws -> String? { try await seed.state(job).host }
    }

    @Test("the database refuses to bind an attempt to a host outside the job's permitted jurisdictions")
    func databaseRefusesIllegalBinding() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let pool = try await Sovereign.make(client)
            let de = try await pool.seed.enroll("de-1", runner: .sandbox)
            let ke = try await pool.seed.enroll("ke-1", partner: "uon", region: "ke-nbo-1", runner: .sandbox)
            let job = try await pool.submit("bound")
            let permitted = try await client.query("select permitted_jurisdictions from jobs where id = \(job)", logger: logger)
                .decode([String]?.self).collect()
            #expect(permitted == [["KE"]])

            // A direct insert, as a buggy scheduler (or a person with SQL access) might write it.
            let illegal = PostgresQuery(unsafeSQL: """
                insert into attempts (job_id, host_id, number, cpu_millis, memory_bytes, lease_expires_at)
                values (\(job), \(de.host), 1, 1000, 1073741824, now() + interval '1 minute')
                """)
            await #expect(throws: PSQLError.self) { try await client.query(illegal, logger: logger) }
            do {
                try await client.query(illegal, logger: logger)
            } catch let error as PSQLError {
                #expect(error.serverInfo?[.sqlState] == "23514")
                #expect(error.serverInfo?[.message]?.contains("residency violation") == true)
            }
            #expect(try await client.query("select count(*) from attempts", logger: logger).decode(Int64.self).collect() == [0])
            // Nor on a host that does not exist (attempts have no foreign key to hosts): nothing says where it would run.
            await #expect(throws: PSQLError.self) {
                try await client.query(PostgresQuery(unsafeSQL: """
                    insert into attempts (job_id, host_id, number, cpu_millis, memory_bytes, lease_expires_at)
                    values (\(job), 999999, 1, 1000, 1073741824, now() + interval '1 minute')
                    """), logger: logger)
            }

            // The same insert on the Kenyan host is accepted; moving it to the German host afterwards is not.
            try await client.query(PostgresQuery(unsafeSQL: """
                insert into attempts (job_id, host_id, number, cpu_millis, memory_bytes, lease_expires_at)
                values (\(job), \(ke.host), 1, 1000, 1073741824, now() + interval '1 minute')
                """), logger: logger)
            await #expect(throws: PSQLError.self) {
                try await client.query(PostgresQuery(unsafeSQL: "update attempts set host_id = \(de.host) where job_id = \(job)"), logger: logger)
            }
            // Nor may the host itself be moved to a region of another jurisdiction while the attempt is active.
            await #expect(throws: PSQLError.self) {
                try await client.query(PostgresQuery(unsafeSQL: "update hosts set region = 'eu-de-1' where id = \(ke.host)"), logger: logger)
            }
            // Rule versions are immutable.
            await #expect(throws: PSQLError.self) {
                try await client.query("update policies set document = '{}' where name = 'ke-health'", logger: logger)
            }
        }
    }

    @Test("a pass places residency-bound jobs only in their jurisdiction; a rule change stops the running one and frees the others")
    func placementAndRuleChange() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let pool = try await Sovereign.make(client)
            _ = try await pool.seed.enroll("de-1", cpus: 8, runner: .sandbox)
            _ = try await pool.seed.enroll("ke-1", partner: "uon", region: "ke-nbo-1", cpus: 1, runner: .sandbox)
            let jobs = [try await pool.submit("a"), try await pool.submit("b"), try await pool.submit("c")]
            let free = try await pool.submit("free", inputs: [])
            _ = try await pool.store.schedulingPass()
            // One Kenyan CPU: one bound job runs there, the others wait although de-1 is idle; the unbound job (of
            // uon, a guest on tum's host) goes to de-1.
            #expect(try await pool.host(of: jobs[0]) == "ke-1")
            #expect(try await pool.seed.state(jobs[1]).state == .queued)
            #expect(try await pool.seed.state(jobs[2]).state == .queued)
            #expect(try await pool.host(of: free) == "de-1")
            // Each placement's audit entry names the job's datasets, both partners, the host's region and the
            // jurisdictions the job was permitted.
            let submitted = try await pool.store.auditEntries(AuditFilter(job: jobs[0], kind: "submitted"), after: 0, limit: 10)
            #expect(submitted.count == 1)
            #expect(submitted.first?.actor == pool.seed.admin.name && submitted.first?.partners == ["uon"] && submitted.first?.datasets == ["ke-health"])
            #expect(submitted.first?.body.contains("\"project\" : \"asr\"") == true && submitted.first?.body.contains("\"permitted\" : [\"KE\"]") == true)
            let placed = try await pool.store.auditEntries(AuditFilter(kind: "placed"), after: 0, limit: 10)
            let bound = try #require(placed.first { $0.jobId == jobs[0] })
            #expect(bound.datasets == ["ke-health"] && bound.partners == ["uon"] && bound.region == "ke-nbo-1")
            #expect(bound.body.contains("\"permitted\" : [\"KE\"]") && bound.body.contains("\"class\" : \"own\""), "\(bound.body)")
            let guest = try #require(placed.first { $0.jobId == free })
            // uon's job on tum's host, beyond uon's one contributed CPU: borrowed (preemptible).
            #expect(guest.datasets == [] && guest.partners == ["uon", "tum"] && guest.region == "eu-de-1", "\(guest)")
            #expect(guest.body.contains("\"class\" : \"borrowed\"") && guest.body.contains("\"permitted\" : null"), "\(guest.body)")
            let why = try #require(try await pool.store.why(job: jobs[1], scope: .all))
            #expect(why.outcome == .pending)
            #expect(why.summary.hasPrefix("1/2 hosts eligible: 1 RESIDENCY(ke-health: KE only)"), "\(why.summary)")
            #expect(why.waysOut == ["would be eligible on 1 host if ke-health allowed DE"])
            let keVerdict = try #require(why.hosts.first { $0.host == "ke-1" })
            #expect(keVerdict.eligible && keVerdict.reasons.map(\.code) == [.busy])

            // The dry run reports and changes nothing.
            let toEU: JSONValue = ["kind": "dataset", "name": "ke-health", "steward": "uon", "class": "health", "residency": ["allow": ["EU"]]]
            let dry = try await pool.apply(toEU, by: pool.uon, dryRun: true)
            #expect(!dry.applied && dry.version == 2)
            #expect(dry.impact.stopped.map(\.id) == [jobs[0]])
            // The others were already eligible on ke-1 (busy): not "unblocked" by the change, which widens their hosts.
            #expect(dry.impact.unblocked.isEmpty && dry.impact.newlyBlocked.isEmpty)
            #expect(try await pool.seed.state(jobs[0]).state == .assigned)

            let applied = try await pool.apply(toEU, by: pool.uon)
            #expect(applied.applied && applied.impact.stopped.map(\.id) == [jobs[0]])
            let stopped = try await pool.seed.state(jobs[0])
            #expect(stopped.state == .queued && stopped.reason == "rule change: RESIDENCY(ke-health)")
            let attempt = try await client.query("select state, reason from attempts where job_id = \(jobs[0])", logger: logger)
                .decode((String, String?).self).collect()
            #expect(attempt.map(\.0) == ["preempted"])
            #expect(try await client.query("select permitted_jurisdictions from jobs where id = \(jobs[1])", logger: logger).decode([String]?.self).collect() == [["DE", "EU"]])

            _ = try await pool.store.schedulingPass()
            for job in jobs { #expect(try await pool.host(of: job) == "de-1") }
            // The stop did not use up the job's retries (it had none).
            #expect(try await pool.seed.state(jobs[0]).state == .assigned)
        }
    }

    @Test("a rule announced for later: no placement it would cut short, and the claim is refused once it is in force")
    func futureRuleAndClaimRecheck() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let pool = try await Sovereign.make(client)
            let ke = try await pool.seed.enroll("ke-1", partner: "uon", region: "ke-nbo-1", runner: .sandbox)
            _ = try await pool.seed.enroll("de-1", runner: .sandbox)
            // Far enough ahead that a loaded machine places the short job before it (a full suite on 2 cores took
            // over 8 s to get there): the test waits for it anyway.
            let soon = Date().addingTimeInterval(20)
            try await pool.apply(
                ["kind": "dataset", "name": "ke-health", "steward": "uon", "class": "health", "residency": ["allow": ["DE"]],
                 "effective_from": .string(soon.formatted(.iso8601))], by: pool.uon)
            let long = try await pool.submit("long", maxRuntime: 3600)
            let short = try await pool.submit("short", maxRuntime: 1)
            _ = try await pool.store.schedulingPass()
            #expect(try await pool.seed.state(long).state == .queued)
            #expect(try await pool.host(of: short) == "ke-1")
            let why = try #require(try await pool.store.why(job: long, scope: .all))
            #expect(why.hosts.first { $0.host == "ke-1" }?.reasons.map(\.code) == [.policyFutureConflict])
            #expect(why.hosts.first { $0.host == "de-1" }?.reasons.map(\.code) == [.residency])
            // The database's check already admits what the announced version will allow.
            #expect(why.permittedJurisdictions == ["DE", "KE"])

            // Once the announced version is in force, the agent's pull re-checks and refuses the assignment.
            try await Task.sleep(until: .now + .seconds(max(0, soon.timeIntervalSinceNow) + 0.2))
            let handed = try await pool.store.assignments(host: ke.host)
            #expect(handed.isEmpty)
            let refused = try await pool.seed.state(short)
            #expect(refused.state == .queued)
            #expect(refused.reason?.hasPrefix("claim refused: RESIDENCY(ke-health)") == true, "\(String(describing: refused.reason))")
            let events = try await pool.store.events(job: short).map(\.kind)
            #expect(events.contains("claim-refused"))
            // Under the version now in force both go to Germany; the database's check does not stand in the way.
            _ = try await pool.store.schedulingPass()
            #expect(try await pool.host(of: long) == "de-1")
            #expect(try await pool.host(of: short) == "de-1")
        }
    }

    @Test("a version announced for later stops the running jobs it forbids when it takes effect")
    func announcedRuleTakesEffect() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let pool = try await Sovereign.make(client)
            let ke = try await pool.seed.enroll("ke-1", partner: "uon", region: "ke-nbo-1", runner: .sandbox)
            #expect(try await pool.store.enforceAnnouncedRules() == 0)  // nothing runs yet
            // Far enough ahead that a loaded machine places and starts the job before it (6 s was not, in a full suite).
            let soon = Date().addingTimeInterval(20)
            let announced = try await pool.apply(
                ["kind": "dataset", "name": "ke-health", "steward": "uon", "class": "health", "residency": ["allow": ["DE"]],
                 "effective_from": .string(soon.formatted(.iso8601))], by: pool.uon)
            #expect(announced.impact.stopped.isEmpty)
            let job = try await pool.submit("short", maxRuntime: 1)
            _ = try await pool.store.schedulingPass()
            let attempt = try #require(try await pool.seed.state(job).attempt)
            _ = try await pool.store.start(attempt: attempt, host: ke.host)
            // Before the version is in force, nothing changes.
            #expect(try await pool.store.enforceAnnouncedRules() == 0)
            #expect(try await pool.seed.state(job).state == .running)

            try await Task.sleep(until: .now + .seconds(max(0, soon.timeIntervalSinceNow) + 0.2))
            #expect(try await pool.store.enforceAnnouncedRules() == 1)
            let stopped = try await pool.seed.state(job)
            #expect(stopped.state == .queued && stopped.reason == "rule change: RESIDENCY(ke-health)")
            // Once is enough: the next tick (or another replica) finds nothing to do.
            #expect(try await pool.store.enforceAnnouncedRules() == 0)
        }
    }

    @Test("who may write what, and bad references: rejected with the field named, nothing stored")
    func authorizationAndReferences() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let pool = try await Sovereign.make(client)
            let count = { try await client.query("select count(*) from policies", logger: logger).decode(Int64.self).collect()[0] }
            let before = try await count()
            let cases: [(JSONValue, Principal, StoreError.Code, String)] = [
                (["kind": "dataset", "name": "ke-health", "steward": "uon", "residency": ["allow": ["US"]]], pool.tum, .forbidden, "P_UNAUTHORISED"),
                (["kind": "dataset", "name": "tum-data", "steward": "uon"], pool.tum, .forbidden, "steward must be your partner"),
                (["kind": "donor-policy", "name": "uon", "permit": [["id": "all"]]], pool.tum, .forbidden, "P_UNAUTHORISED"),
                (["kind": "donor-policy", "name": "tum", "permit": [["id": "all"]]], pool.seed.admin, .forbidden, "P_UNAUTHORISED"),
                (["kind": "jurisdiction-set", "name": "EAC", "members": ["KE"]], pool.uon, .forbidden, "only admins"),
                (["kind": "dataset", "name": "ke-2", "steward": "uon", "residency": ["allow": ["KEN"]]], pool.uon, .invalid, "unknown jurisdiction or set KEN; did you mean KE?"),
                (["kind": "dataset", "name": "ke-2", "steward": "uon", "clas": "health"], pool.uon, .invalid, "did you mean \"class\"?"),
                (["kind": "jurisdiction-set", "name": "DE", "members": ["EU"]], pool.seed.admin, .invalid, "is a jurisdiction code"),
            ]
            for (document, principal, code, text) in cases {
                do {
                    try await pool.apply(document, by: principal)
                    Issue.record("accepted \(document)")
                } catch let error as StoreError {
                    #expect(error.code == code, "\(error)")
                    #expect((error.message + (error.fields ?? []).map(\.description).joined()).contains(text), "\(error)")
                }
            }
            #expect(try await count() == before)
            // A job naming an unknown dataset or failing a use condition is rejected with every reason.
            try await pool.apply(
                ["kind": "dataset", "name": "ke-health", "steward": "uon", "class": "health", "residency": ["allow": ["KE"]],
                 "use": ["purposes": ["health-research"]]], by: pool.uon)
            do {
                _ = try await pool.submit("bad", inputs: ["ke-health", "ke-helth"])
                Issue.record("accepted a job with an unknown input")
            } catch let error as StoreError {
                #expect(error.code == .rejected)
                #expect(error.reasons?.map(\.label) == ["E_UNKNOWN_DATASET(ke-helth)", "E_USE_CONDITION(PURPOSE,ke-health)"])
            }
            #expect(try await client.query("select count(*) from jobs", logger: logger).decode(Int64.self).collect() == [0])
        }
    }
}
