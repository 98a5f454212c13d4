import ComityAPI
import ComityCore
import Foundation
import PostgresNIO
import Testing

@testable import ComityStore

@Suite("Fair sharing in the store: quotas, fair-share order, borrowing, reclaim, accounting", .enabled(if: TestDatabase.isAvailable, "needs COMITY_TEST_PG_URL (run ops/test)"))
struct SharingStoreTests {
    let logger = TestDatabase.logger

    /// The seeded federation (tum in DE with project llm, uon in KE with project asr), partner admins, and donor
    /// policies that let every guest in with a one-second grace.
    struct Commons {
        var seed: TestDatabase.Seed
        var tum: Principal
        var uon: Principal
        var store: Store { seed.store }

        static func make(_ client: PostgresClient, configuration: Store.Configuration = .init()) async throws -> Commons {
            let seed = try await TestDatabase.seeded(client, configuration: configuration)
            let commons = Commons(seed: seed, tum: try await seed.partnerAdmin("tum"), uon: try await seed.partnerAdmin("uon"))
            for (partner, principal) in [("tum", commons.tum), ("uon", commons.uon)] {
                _ = try await seed.store.apply(
                    PolicyApplyRequest(document: ["kind": "donor-policy", "name": .string(partner), "grace": "1s", "permit": [["id": "everyone"]]]),
                    by: principal)
            }
            return commons
        }

        func submit(_ name: String, project: String, cpus: Int = 1, kind: JobKind = .training, inputs: [String] = [], preemptible: Bool? = nil) async throws -> Int64 {
            let spec = JobSpec(
                name: name, project: project, kind: kind, command: ["true"], resources: ResourceRequest(cpuMillis: cpus * 1000, memoryBytes: 1 << 30),
                inputs: inputs, retries: 1, preemptible: preemptible)
            return try await store.submit([spec], by: seed.admin)[0]
        }

        /// Accounts contribution as if the last run was `seconds` ago (capped by the store at three intervals).
        func account(after seconds: Int, on client: PostgresClient) async throws {
            try await client.query("update sharing_state set accounted_at = now() - make_interval(secs => \(Double(seconds)))", logger: TestDatabase.logger)
            #expect(try await store.accountSharing())
        }

        func queued(_ jobs: [Int64]) async throws -> [Int64] {
            var result: [Int64] = []
            for job in jobs where try await seed.state(job).state == .queued { result.append(job) }
            return result
        }

        func placedHosts(_ jobs: [Int64]) async throws -> [String?] {
            var hosts: [String?] = []
            for job in jobs { hosts.append(try await seed.state(job).host) }
            return hosts
        }
    }

    @Test("a quota holds a job pending with QUOTA in why; raising it lets the job run; bad quotas are refused, naming the field")
    func quotaHoldsJob() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let commons = try await Commons.make(client)
            _ = try await commons.seed.enroll("tum-1", cpus: 8)
            let quota = try await commons.store.setQuota(QuotaRequest(scope: .project, subject: "llm", cpus: "2"), by: commons.tum)
            #expect(quota.cpuMillis == 2000)
            let jobs = [try await commons.submit("a", project: "llm"), try await commons.submit("b", project: "llm"), try await commons.submit("c", project: "llm")]
            _ = try await commons.store.schedulingPass()
            let hosts = try await commons.placedHosts(jobs)
            #expect(hosts.compactMap { $0 }.count == 2)
            let waiting = try #require(try await commons.queued(jobs).first)
            let why = try #require(try await commons.store.why(job: waiting, scope: .all))
            let reason = try #require(why.jobReasons.first { $0.code == .quota })
            #expect(reason.subject == "project llm")
            #expect(reason.detail.contains("cpus 2/2"))
            #expect(why.summary.contains("QUOTA(project llm"))
            let shown = try await commons.store.quotas(scope: .partner(try #require(commons.tum.partnerID)))
            #expect(shown.count == 1 && shown[0].holding.cpuMillis == 2000)

            // A partner admin may not set another partner's project quota, nor a partner-wide one; bad values name the field.
            await #expect(throws: StoreError.self) { try await commons.store.setQuota(QuotaRequest(scope: .project, subject: "asr", cpus: "1"), by: commons.tum) }
            await #expect(throws: StoreError.self) { try await commons.store.setQuota(QuotaRequest(scope: .partner, subject: "tum", gpus: 1), by: commons.tum) }
            do {
                _ = try await commons.store.setQuota(QuotaRequest(scope: .project, subject: "llm", cpus: "lots"), by: commons.tum)
                Issue.record("a quota of \"lots\" CPUs was accepted")
            } catch let error as StoreError {
                #expect(error.fields?.first?.field == "cpus")
            }
            #expect(try await commons.store.quotas(scope: .all).count == 1)

            _ = try await commons.store.setQuota(QuotaRequest(scope: .project, subject: "llm", cpus: "3"), by: commons.seed.admin)
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.seed.state(waiting).state == .assigned)
        }
    }

    @Test("a regional quota counts attempts on a host that went down until they end")
    func regionalQuotaCountsDownHosts() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let commons = try await Commons.make(client)
            let first = try await commons.seed.enroll("tum-1", cpus: 4)
            _ = try await commons.store.setQuota(QuotaRequest(scope: .project, subject: "llm", region: "eu-de-1", cpus: "1"), by: commons.tum)
            let running = try await commons.submit("running", project: "llm")
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.seed.state(running).host == "tum-1")
            // tum-1 goes silent (its attempt's lease has not expired yet); a second host joins in the same region.
            try await client.query("update hosts set state = 'down' where id = \(first.host)", logger: logger)
            _ = try await commons.seed.enroll("tum-2", cpus: 4)
            let waiting = try await commons.submit("waiting", project: "llm")
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.seed.state(waiting).state == .queued)
            let why = try #require(try await commons.store.why(job: waiting, scope: .all))
            #expect(why.hosts.first { $0.host == "tum-2" }?.reasons.contains { $0.code == .quota && $0.detail.contains("cpus 1/1") } == true)
        }
    }

    @Test("fair share interleaves partners: with equal contributions each gets half of a full pool, whoever submitted first")
    func fairShareInterleaves() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let commons = try await Commons.make(client)
            _ = try await commons.seed.enroll("tum-1", cpus: 4)
            _ = try await commons.seed.enroll("uon-1", partner: "uon", region: "ke-nbo-1", cpus: 4)
            try await commons.account(after: 60, on: client)
            let shares = try await commons.store.shares()
            let entitled = Dictionary(uniqueKeysWithValues: shares.partners.map { ($0.partner, $0.entitled.cpu) })
            #expect(abs((entitled["tum"] ?? 0) - 0.5) < 1e-9 && abs((entitled["uon"] ?? 0) - 0.5) < 1e-9)
            // tum floods the queue first; uon's jobs come later.
            var tumJobs: [Int64] = []
            for index in 0..<8 { tumJobs.append(try await commons.submit("t\(index)", project: "llm")) }
            var uonJobs: [Int64] = []
            for index in 0..<8 { uonJobs.append(try await commons.submit("u\(index)", project: "asr")) }
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.placedHosts(tumJobs).compactMap { $0 }.count == 4)
            #expect(try await commons.placedHosts(uonJobs).compactMap { $0 }.count == 4)
            // Own hosts first: each partner's jobs run on its own host.
            #expect(Set(try await commons.placedHosts(tumJobs).compactMap { $0 }) == ["tum-1"])
            #expect(Set(try await commons.placedHosts(uonJobs).compactMap { $0 }) == ["uon-1"])
        }
    }

    @Test("reclaim: an owner's job preempts the borrowing guest after the donor's grace, the host waits for it, the guest requeues keeping its retries; no ping-pong")
    func ownerReclaims() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let commons = try await Commons.make(client)
            let host = try await commons.seed.enroll("tum-1", cpus: 4)
            try await commons.account(after: 60, on: client)
            // uon has no hardware and no grant: everything it runs elsewhere is borrowed.
            let guest = try await commons.submit("guest", project: "asr", cpus: 4)
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.seed.state(guest).host == "tum-1")
            let borrowed = try await client.query("select guest, borrowed from attempts where job_id = \(guest)", logger: logger).decode((Bool, Bool).self).collect()
            #expect(borrowed.first! == (true, true))
            let guestAttempt = try #require(try await commons.seed.state(guest).attempt)
            #expect(try await commons.store.start(attempt: guestAttempt, host: host.host).current)

            let owner = try await commons.submit("owner", project: "llm", cpus: 4)
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.seed.state(owner).state == .queued)
            let stopping = try await client.query("select stop_after is not null, stop_reason from attempts where id = \(guestAttempt)", logger: logger)
                .decode((Bool, String?).self).collect()
            #expect(stopping.first?.0 == true)
            #expect(stopping.first?.1?.contains("job \(owner)") == true)
            let reserved = try await client.query("select host_id from reservations where job_id = \(owner)", logger: logger).decode(Int64.self).collect()
            #expect(reserved == [host.host])
            let events = try await commons.store.events(job: owner)
            #expect(events.contains { $0.kind == "reclaim" && $0.message.contains("\(guest)") })
            let why = try #require(try await commons.store.why(job: owner, scope: .all))
            #expect(why.sharing?.contains("reclaiming tum-1") == true)

            // After the grace (one second) the reaper's preemption stops the guest; poll with a deadline.
            let deadline = ContinuousClock.now + .seconds(10)
            while try await commons.store.preemptDue() == 0 {
                guard ContinuousClock.now < deadline else { Issue.record("the guest was not preempted within 10 s"); return }
                try await Task.sleep(for: .milliseconds(100))
            }
            let requeued = try await commons.seed.state(guest)
            #expect(requeued.state == .queued)
            let retries = try await client.query("select attempts - policy_stops, last_preempted_at is not null from jobs where id = \(guest)", logger: logger)
                .decode((Int32, Bool).self).collect()
            #expect(retries.first! == (0, true))  // the preemption used no retry
            #expect(try await commons.store.events(job: guest).contains { $0.kind == "preempted" && $0.message.contains("job \(owner)") })
            try await commons.store.chainAudit()
            #expect(try await client.number("select count(*) from audit_log where kind = 'preempted' and job_id = \(guest)") == 1)

            // The next pass gives the host to the owner's job (its reservation), not back to the requeued guest.
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.seed.state(owner).host == "tum-1")
            #expect(try await commons.seed.state(guest).state == .queued)
            // Its partner is entitled to nothing: why says so with FAIR_SHARE, an order, not what bars the hosts.
            let guestWhy = try #require(try await commons.store.why(job: guest, scope: .all))
            let fairShare = try #require(guestWhy.jobReasons.first { $0.code == .fairShare })
            #expect(fairShare.subject == "uon" && fairShare.detail.contains("entitled to no share"))
            #expect(!guestWhy.summary.contains("FAIR_SHARE"), "\(guestWhy.summary)")
            #expect(try await client.number("select count(*) from reservations") == 0)

            // The owner's job ends; the guest runs again; a new owner job does not preempt it within the cool-down.
            let ownerAttempt = try #require(try await commons.seed.state(owner).attempt)
            _ = try await commons.store.start(attempt: ownerAttempt, host: host.host)
            _ = try await commons.store.finish(attempt: ownerAttempt, host: host.host, FinishRequest(outcome: .exited, exitCode: 0))
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.seed.state(guest).host == "tum-1")
            let again = try await commons.submit("owner-again", project: "llm", cpus: 4)
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.seed.state(again).state == .queued)
            #expect(
                try await client.number(
                    "select count(*) from attempts where job_id = \(guest) and stop_after is not null and state in ('assigned', 'running')") == 0)
        }
    }

    @Test("no preemption for capacity the waiting job may not legally use")
    func noPreemptionForIllegalCapacity() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let commons = try await Commons.make(client)
            // A sandbox host, so that residency alone keeps the Kenyan job off it.
            _ = try await commons.seed.enroll("tum-1", cpus: 4, runner: .sandbox)
            try await commons.account(after: 60, on: client)
            _ = try await commons.store.apply(
                PolicyApplyRequest(document: ["kind": "dataset", "name": "ke-health", "steward": "uon", "class": "health", "residency": ["allow": ["KE"]]]),
                by: commons.uon)
            let guest = try await commons.submit("guest", project: "asr", cpus: 4)
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.seed.state(guest).host == "tum-1")
            // tum's job reads Kenyan data: its own German host is no use to it, so nothing is preempted there.
            let owner = try await commons.submit("owner", project: "llm", cpus: 4, inputs: ["ke-health"])
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.seed.state(owner).state == .queued)
            #expect(try await client.number("select count(*) from attempts where stop_after is not null") == 0)
            #expect(try await client.number("select count(*) from reservations") == 0)
        }
    }

    @Test("a partner below its share reclaims from a borrower, but only where sharing would admit its job: a service that cannot be a guest there reclaims nothing")
    func fairShareReclaimOnlyWhereAdmitted() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let commons = try await Commons.make(client)
            _ = try await commons.seed.enroll("tum-1", cpus: 4)
            _ = try await commons.seed.enroll("uon-1", partner: "uon", region: "ke-nbo-1", cpus: 1)
            _ = try await commons.store.addPartner(Partner(name: "kit", jurisdiction: "DE"))
            _ = try await commons.store.addProject(Project(name: "kit-lab", partner: "kit"))
            try await commons.account(after: 60, on: client)
            // kit has no hardware: its job borrows tum's host.
            let borrower = try await commons.submit("borrower", project: "kit-lab", cpus: 4)
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.seed.state(borrower).host == "tum-1")

            // uon is owed its share, but a service that did not opt in to preemption may not be a guest on tum's host:
            // no victim is chosen and no host reserved for it.
            let service = try await commons.submit("svc", project: "asr", cpus: 4, kind: .inference)
            _ = try await commons.store.schedulingPass()
            #expect(try await client.number("select count(*) from attempts where stop_after is not null") == 0)
            #expect(try await client.number("select count(*) from reservations") == 0)

            // A batch job of the same size may: kit's guest is told to stop for it.
            let batch = try await commons.submit("batch", project: "asr", cpus: 4)
            _ = try await commons.store.schedulingPass()
            let stops = try await client.query("select stop_reason from attempts where stop_after is not null", logger: logger).decode(String?.self).collect()
            #expect(stops.count == 1)
            #expect(stops.first??.contains("job \(batch) of a partner below its share") == true, "\(stops)")
            #expect(try await client.query("select job_id from reservations", logger: logger).decode(Int64.self).collect() == [batch])
            #expect(try await commons.seed.state(service).state == .queued)
        }
    }

    @Test("borrowing and lending limits, and services as guests, keep jobs off other partners' hosts with a reason")
    func limitsAndServices() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let commons = try await Commons.make(client)
            _ = try await commons.seed.enroll("tum-1", cpus: 8)
            try await commons.account(after: 60, on: client)
            // tum lends at most a quarter of its CPUs.
            _ = try await commons.store.setLending(partner: "tum", LendingRequest(borrowLimit: nil, lendLimit: 0.25, lendsNonReclaimable: false), by: commons.tum)
            let jobs = [try await commons.submit("g1", project: "asr"), try await commons.submit("g2", project: "asr"), try await commons.submit("g3", project: "asr")]
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.placedHosts(jobs).compactMap { $0 }.count == 2)
            let third = try #require(try await commons.queued(jobs).first)
            let why = try #require(try await commons.store.why(job: third, scope: .all))
            #expect(why.hosts.first { $0.host == "tum-1" }?.reasons.contains { $0.code == .lendLimit } == true)

            // A partner admin may not set its own borrowing limit; an admin may. With no room to borrow, nothing runs as a guest.
            await #expect(throws: StoreError.self) {
                try await commons.store.setLending(partner: "uon", LendingRequest(borrowLimit: 0, lendLimit: nil, lendsNonReclaimable: false), by: commons.uon)
            }
            _ = try await commons.store.setLending(partner: "tum", LendingRequest(borrowLimit: nil, lendLimit: nil, lendsNonReclaimable: false), by: commons.tum)
            _ = try await commons.store.setLending(partner: "uon", LendingRequest(borrowLimit: 0, lendLimit: nil, lendsNonReclaimable: false), by: commons.seed.admin)
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.seed.state(third).state == .queued)
            let borrowWhy = try #require(try await commons.store.why(job: third, scope: .all))
            #expect(borrowWhy.hosts.first { $0.host == "tum-1" }?.reasons.contains { $0.code == .borrowLimit } == true)

            // A service that did not opt in to preemption is no guest unless the donor lends non-reclaimable capacity
            // and its partner stays within its entitlement (a grant gives uon one).
            _ = try await commons.store.setLending(partner: "uon", LendingRequest(borrowLimit: nil, lendLimit: nil, lendsNonReclaimable: false), by: commons.seed.admin)
            _ = try await commons.store.cancel(job: third, scope: .all, by: commons.seed.admin)
            let service = try await commons.submit("svc", project: "asr", kind: .inference)
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.seed.state(service).state == .queued)
            let serviceWhy = try #require(try await commons.store.why(job: service, scope: .all))
            #expect(serviceWhy.hosts.first { $0.host == "tum-1" }?.reasons.contains { $0.code == .serviceGuest } == true)
            _ = try await commons.store.addGrant(GrantRequest(partner: "uon", kind: .cpu, fraction: 0.5, reason: "no hardware yet"), by: commons.seed.admin)
            _ = try await commons.store.addGrant(GrantRequest(partner: "uon", kind: .memory, fraction: 0.5, reason: "no hardware yet"), by: commons.seed.admin)
            _ = try await commons.store.setLending(partner: "tum", LendingRequest(borrowLimit: nil, lendLimit: nil, lendsNonReclaimable: true), by: commons.tum)
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.seed.state(service).host == "tum-1")
        }
    }

    @Test("accounting credits each partner its hosts' capacity × time and each project what its attempts held; grants come off the top")
    func accounting() async throws {
        try await TestDatabase.withDatabase { client, _ in
            var configuration = Store.Configuration()
            configuration.shareHalfLifeSeconds = 86_400
            let commons = try await Commons.make(client, configuration: configuration)
            _ = try await commons.seed.enroll("tum-1", cpus: 8, memory: 16 << 30)
            _ = try await commons.seed.enroll("uon-1", partner: "uon", region: "ke-nbo-1", cpus: 4, memory: 8 << 30)
            // uon lends half of its hosts; kit lends nothing (no donor policy): it contributes nothing.
            _ = try await commons.store.setLending(partner: "uon", LendingRequest(borrowLimit: nil, lendLimit: 0.5, lendsNonReclaimable: false), by: commons.uon)
            _ = try await commons.store.addPartner(Partner(name: "kit", jurisdiction: "DE"))
            _ = try await commons.seed.enroll("kit-1", partner: "kit", cpus: 64)
            try await commons.account(after: 60, on: client)
            let contribution = try await client.query("select p.name, c.cpu, c.memory from partner_contribution c join partners p on p.id = c.partner_id order by 1", logger: logger)
                .decode((String, Double, Double).self).collect()
            #expect(contribution.count == 2)  // kit has no row
            // 60 s × 8 cores and × 16 GiB, within the time the statement itself took.
            #expect(abs(contribution[0].1 - 480) / 480 < 0.05 && contribution[0].0 == "tum")
            #expect(abs(contribution[0].2 - 960) / 960 < 0.05)
            #expect(abs(contribution[1].1 - 120) / 120 < 0.05)  // half of 4 cores × 60 s
            // A later run decays what was there and adds to it (with a half-life of a day, 60 s decay by 0.05%):
            // tum's 480 core-seconds become about 480 + 8 × 60.
            try await commons.account(after: 60, on: client)
            let again = try await client.query("select c.cpu from partner_contribution c join partners p on p.id = c.partner_id where p.name = 'tum'", logger: logger)
                .decode(Double.self).collect()
            #expect(again.count == 1 && abs(again[0] - 960) / 960 < 0.05, "\(again)")

            let job = try await commons.submit("work", project: "llm", cpus: 2)
            _ = try await commons.store.schedulingPass()
            #expect(try await commons.seed.state(job).host == "tum-1")
            try await client.query("update attempts set assigned_at = now() - interval '30 seconds' where job_id = \(job)", logger: logger)
            try await commons.account(after: 30, on: client)
            let usage = try await client.query("select cpu from project_usage u join projects p on p.id = u.project_id where p.name = 'llm'", logger: logger)
                .decode(Double.self).collect()
            #expect(usage.count == 1 && abs(usage[0] - 60) / 60 < 0.1)  // 2 cores × 30 s

            _ = try await commons.store.addGrant(GrantRequest(partner: "uon", kind: .cpu, fraction: 0.2), by: commons.seed.admin)
            // A second grant of the same kind replaces the first.
            let replaced = try await commons.store.addGrant(GrantRequest(partner: "uon", kind: .cpu, fraction: 0.3, reason: "replaced"), by: commons.seed.admin)
            #expect(try await commons.store.grants(scope: .all, includeRevoked: false).map(\.id) == [replaced.id])
            #expect(try await commons.store.grants(scope: .all, includeRevoked: true).count == 2)
            await #expect(throws: StoreError.self) { try await commons.store.addGrant(GrantRequest(partner: "uon", kind: .cpu, fraction: 1.5), by: commons.seed.admin) }
            await #expect(throws: StoreError.self) { try await commons.store.addGrant(GrantRequest(partner: "uon", kind: .cpu, fraction: 0.1), by: commons.uon) }
            let shares = try await commons.store.shares()
            let uon = try #require(shares.partners.first { $0.partner == "uon" })
            // 30% granted plus a fifth (2 of 10 cores contributed) of the remaining 70%.
            #expect(abs(uon.entitled.cpu - (0.3 + 0.7 * 0.2)) < 0.01)
            #expect(uon.granted.cpu == 0.3)
            let tum = try #require(shares.partners.first { $0.partner == "tum" })
            #expect(tum.holding.cpu == 2)
            let report = try await commons.store.usage(by: .partner, partner: nil, since: Date().addingTimeInterval(-3600), scope: .all)
            let tumRow = try #require(report.rows.first { $0.key == "tum" })
            #expect(tumRow.used.cpu > 0.015 && tumRow.contributed.cpu > 0.15)  // core-hours: 2 × 30 s, 8 × 90 s
            let grants = try await commons.store.grants(scope: .all, includeRevoked: false)
            #expect(grants.count == 1)
            #expect(try await commons.store.revokeGrant(grants[0].id, by: commons.seed.admin))
            #expect(try await commons.store.grants(scope: .all, includeRevoked: false).isEmpty)
        }
    }
}
