import ComityAPI
import ComityCore
import Crypto
import Foundation
import PostgresNIO
import Synchronization
import Testing

@testable import ComityStore

@Suite("Audit ledger in PostgreSQL: written with every change, append-only, tampering detected", .enabled(if: TestDatabase.isAvailable, "needs COMITY_TEST_PG_URL (run ops/test)"))
struct AuditStoreTests {
    let logger = TestDatabase.logger

    /// Real activity: two hosts enroll, jobs are submitted, placed, started and finished.
    static func activity(_ seed: TestDatabase.Seed, jobs: Int = 12) async throws {
        let store = seed.store
        let hosts = [try await seed.enroll("h1", cpus: 4), try await seed.enroll("h2", cpus: 4)]
        for index in 0..<jobs { _ = try await seed.submit("j\(index)") }
        _ = try await store.schedulingPass()
        for host in hosts {
            for assignment in try await store.assignments(host: host.host) {
                _ = try await store.start(attempt: assignment.attempt, host: host.host)
                _ = try await store.finish(attempt: assignment.attempt, host: host.host, FinishRequest(outcome: .exited, exitCode: 0))
            }
        }
        // Tamper tests change chained rows: chain everything first.
        try await store.chainAudit()
    }

    func verify(_ store: Store, checkpoints: [Int64: [UInt8]] = [:]) async throws -> (AuditDamage?, Int64) {
        var verifier = AuditVerifier(checkpoints: checkpoints)
        var after: Int64 = 0
        while true {
            let page = try await store.auditEntries(AuditFilter(), after: after, limit: 7)
            for entry in page where !verifier.feed(entry) { break }
            guard let last = page.last, verifier.damage == nil else { break }
            after = last.seq
        }
        return (verifier.finish(), verifier.checked)
    }

    /// Runs `sql` as a superuser with triggers off (how an operator with database access would tamper).
    func tamper(_ client: PostgresClient, _ sql: String) async throws {
        try await client.withConnection { connection in
            try await connection.query("set session_replication_role = replica", logger: logger)
            try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger)
            try await connection.query("set session_replication_role = origin", logger: logger)
        }
    }

    @Test("activity is recorded in order, and the chain recomputed in Swift matches what PostgreSQL wrote")
    func recordedAndVerified() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            try await Self.activity(seed)
            let entries = try await seed.store.auditEntries(AuditFilter(), after: 0, limit: 1_000)
            let kinds = entries.map(\.kind)
            #expect(kinds.filter { $0 == "host-enrolled" }.count == 2)
            #expect(kinds.filter { $0 == "submitted" }.count == 12)
            #expect(kinds.filter { $0 == "placed" }.count == 8)  // 2 hosts × 4 CPUs
            #expect(kinds.filter { $0 == "started" }.count == 8)
            #expect(kinds.filter { $0 == "ended" }.count == 8)
            #expect(entries.map(\.seq) == Array(1...Int64(entries.count)))
            let placed = try #require(entries.first { $0.kind == "placed" })
            #expect(placed.partners == ["tum"] && placed.region == "eu-de-1" && placed.policy.hasPrefix("p") && placed.body.contains("\"class\" : \"own\""))
            let (damage, checked) = try await verify(seed.store)
            #expect(damage == nil)
            #expect(checked == Int64(entries.count))
            // Filters.
            let job = try #require(placed.jobId)
            let forJob = try await seed.store.auditEntries(AuditFilter(job: job), after: 0, limit: 100).map(\.kind)
            #expect(forJob == ["submitted", "placed", "started", "ended"])
        }
    }

    @Test("one field modified in place (as a superuser, triggers disabled) is found")
    func modifiedInPlace() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            try await Self.activity(seed)
            try await tamper(client, "update audit_log set region = 'ke-nbo-1' where seq = 9")
            let (damage, checked) = try await verify(seed.store)
            #expect(damage?.kind == .modified && damage?.seq == 9)
            #expect(checked == 8)
        }
    }

    @Test("one entry deleted is found missing")
    func deleted() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            try await Self.activity(seed)
            try await tamper(client, "delete from audit_log where seq = 11")
            let (damage, _) = try await verify(seed.store)
            #expect(damage?.kind == .missing && damage?.seq == 11)
        }
    }

    @Test("two entries swapped are found reordered")
    func swapped() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            try await Self.activity(seed)
            // Move both rows aside, then put each at the other's place.
            try await tamper(client, """
                update audit_log set seq = seq + 1000000 where seq in (5, 6);
                """)
            try await tamper(client, "update audit_log set seq = 6 where seq = 1000005")
            try await tamper(client, "update audit_log set seq = 5 where seq = 1000006")
            let (damage, _) = try await verify(seed.store)
            #expect(damage?.kind == .reordered && damage?.seq == 5)
        }
    }

    @Test("history rewritten with recomputed hashes passes alone and is caught against a saved checkpoint")
    func rewrittenTail() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            try await Self.activity(seed)
            let key = Curve25519.Signing.PrivateKey()
            let head = try await seed.store.auditHead()
            let saved = try AuditCheckpoint.sign(origin: "test/audit", size: head.size, root: head.root, key: key)
            // An operator rewrites entry 4 and recomputes every hash after it, as the database would have.
            try await tamper(client, """
                do $$
                declare
                    r record;
                    previous bytea;
                    new_leaf bytea;
                begin
                    update audit_log set actor = 'somebody else' where seq = 4;
                    select hash into previous from audit_log where seq = 3;
                    for r in select * from audit_log where seq >= 4 order by seq loop
                        new_leaf := sha256('\\x00'::bytea || convert_to(audit_canonical(r.seq, r.at_us, r.kind, r.actor, r.job_id, r.host_id,
                            r.partners, r.region, r.datasets, r.policy, r.body), 'UTF8'));
                        previous := sha256('\\x01'::bytea || previous || new_leaf);
                        update audit_log set leaf = new_leaf, hash = previous where seq = r.seq;
                    end loop;
                end $$
                """)
            let (alone, _) = try await verify(seed.store)
            #expect(alone == nil, "a consistent rewrite is invisible without a kept checkpoint")
            let opened = try AuditCheckpoint.open(saved.text, key: key.publicKey, name: "test/audit")
            let (damage, _) = try await verify(seed.store, checkpoints: [opened.size: opened.root])
            #expect(damage?.kind == .rewritten)
            #expect(damage?.seq == 1)
        }
    }

    @Test("the ledger refuses UPDATE, DELETE and TRUNCATE; a role without ownership cannot even disable the triggers")
    func appendOnly() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            try await Self.activity(seed, jobs: 2)
            for sql in ["update audit_log set actor = 'x' where seq = 1", "delete from audit_log where seq = 1", "truncate audit_log"] {
                await #expect(throws: PSQLError.self, "\(sql)") { try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger) }
            }
            // The table belongs to a role that cannot log in; an application role with INSERT and SELECT only
            // cannot change rows even with the triggers out of the way, nor take them out of the way.
            let owner = try await client.query("select tableowner from pg_tables where tablename = 'audit_log'", logger: logger).decode(String.self).collect()
            #expect(owner == ["comity_audit_owner"])
            try await client.withConnection { connection in
                try await connection.query(
                    "do $$ begin if not exists (select 1 from pg_roles where rolname = 'comity_app_probe') then create role comity_app_probe nologin; end if; end $$",
                    logger: logger)
                try await connection.query("grant select, insert on audit_log to comity_app_probe", logger: logger)
                try await connection.query("set role comity_app_probe", logger: logger)
                for sql in ["alter table audit_log disable trigger all", "update audit_log set actor = 'x' where seq = 1", "delete from audit_log"] {
                    await #expect(throws: PSQLError.self, "\(sql)") { try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger) }
                }
                try await connection.query("reset role", logger: logger)
            }
            #expect(try await verify(seed.store).0 == nil)
        }
    }

    @Test("concurrent submissions from many clients, chained by concurrent sequencers, never fork the chain")
    func concurrentAppends() async throws {
        try await TestDatabase.withDatabase { client, database in
            let seed = try await TestDatabase.seeded(client)
            let chained = Tally(0)
            try await withThrowingTaskGroup(of: Void.self) { group in
                // Three sequencers (as three server replicas would run) chain while the submissions commit.
                let submitting = Tally(8)
                for _ in 0..<3 {
                    group.addTask {
                        try await PostgresClient.with(try database.clientConfiguration(maxConnections: 1), logger: logger) { other in
                            let store = Store(client: other, logger: logger)
                            while submitting.value > 0 {
                                let n = try await store.chainAudit(batch: 7)
                                chained.add(n)
                            }
                        }
                    }
                }
                for worker in 0..<8 {
                    group.addTask {
                        try await PostgresClient.with(try database.clientConfiguration(maxConnections: 2), logger: logger) { other in
                            let store = Store(client: other, logger: logger)
                            for index in 0..<15 {
                                let spec = JobSpec(name: "w\(worker)-\(index)", project: "llm", command: ["true"], resources: ResourceRequest(cpuMillis: 100, memoryBytes: 1 << 20))
                                _ = try await store.submit(index.isMultiple(of: 5) ? [spec, spec, spec] : [spec], by: seed.admin)
                            }
                        }
                        submitting.add(-1)
                    }
                }
                try await group.waitForAll()
            }
            // The sequencers did chain while submissions were still coming (not only the final flush below).
            #expect(chained.value > 0)
            try await seed.store.chainAudit()
            let submitted = try await client.query("select count(*) from audit_log where kind = 'submitted'", logger: logger)
                .decode(Int64.self).collect()
            #expect(submitted == [Int64(8 * (12 + 3 * 3))])
            let (damage, checked) = try await verify(seed.store)
            #expect(damage == nil)
            #expect(checked == (try await seed.store.auditHead()).size)
        }
    }

    @Test("a placement whose audit entry cannot be written does not happen")
    func noPlacementWithoutItsRecord() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            _ = try await seed.enroll("h1")
            let job = try await seed.submit("j")
            try await client.query(
                """
                create function refuse_placed() returns trigger language plpgsql as $$
                begin
                    if new.kind = 'placed' then raise exception 'the ledger is unavailable'; end if;
                    return new;
                end $$
                """, logger: logger)
            // Entries are written in the change's transaction (into the sequencer's queue; docs/audit.md).
            try await client.query("create trigger refuse_placed before insert on audit_pending for each row execute function refuse_placed()", logger: logger)
            await #expect(throws: (any Error).self) { _ = try await seed.store.schedulingPass() }
            #expect(try await seed.state(job).state == .queued)
            #expect(try await client.query("select count(*) from attempts", logger: logger).decode(Int64.self).collect() == [0])
            try await seed.store.chainAudit()
            #expect(try await client.query("select count(*) from audit_log where kind = 'placed'", logger: logger).decode(Int64.self).collect() == [0])
            // The submission before it was recorded.
            #expect(try await client.query("select count(*) from audit_log where kind = 'submitted'", logger: logger).decode(Int64.self).collect() == [1])
        }
    }

    @Test("a revoked token no longer authenticates; a partner admin revokes only its own partner's; both are recorded")
    func tokenRevocation() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let store = seed.store
            let researcher = try await store.createToken(CreateTokenRequest(role: .researcher, project: "asr"), by: seed.admin)
            let uonAdmin = try await seed.partnerAdmin("uon")
            let tumAdmin = try await seed.partnerAdmin("tum")
            #expect(try await store.revokeToken(researcher.id, by: tumAdmin) == nil, "another partner's token is invisible")
            #expect(try await store.principal(forToken: researcher.token) != nil)
            #expect(try await store.revokeToken(researcher.id, by: uonAdmin) == "researcher-asr")
            #expect(try await store.principal(forToken: researcher.token) == nil)
            #expect(try await store.revokeToken(researcher.id, by: seed.admin) == "researcher-asr", "revoking twice is not an error")
            let revoked = try await store.auditEntries(AuditFilter(kind: "token-revoked"), after: 0, limit: 10)
            #expect(revoked.count == 1 && revoked[0].actor == uonAdmin.name && revoked[0].partners == ["uon"])
            #expect(try await verify(store).0 == nil)
        }
    }
}

/// A counter shared by concurrent tasks.
private final class Tally: Sendable {
    private let count: Mutex<Int>
    init(_ value: Int) { count = Mutex(value) }
    var value: Int { count.withLock { $0 } }
    func add(_ n: Int) { count.withLock { $0 += n } }
}
