import ComityAPI
import ComityCore
import Foundation
import Testing

/// A pool for fair sharing: tum (Germany) owns de1 and lends it to everyone with a two-second grace; uon (Kenya) has
/// no hardware; mit (US) lends us1, which joins later; uon's health corpus may be processed only in Kenya.
struct SharingPoolTrait: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        try await Pool.serve(function) { pool in
            for arguments in [
                ["jurisdictions", "add", "DE"], ["jurisdictions", "add", "KE"], ["jurisdictions", "add", "US"],
                ["regions", "add", "ke-nbo-1", "--jurisdiction", "KE"], ["regions", "add", "eu-de-1", "--jurisdiction", "DE"],
                ["regions", "add", "us-east-1", "--jurisdiction", "US"],
                ["partners", "add", "uon", "--jurisdiction", "KE"], ["partners", "add", "tum", "--jurisdiction", "DE"],
                ["partners", "add", "mit", "--jurisdiction", "US"],
                ["projects", "add", "asr", "--partner", "uon"], ["projects", "add", "llm", "--partner", "tum"],
            ] {
                try await pool.cliOK(arguments)
        }
        let tumToken = try await pool.cliOK(["tokens", "create", "--role", "partner-admin", "--partner", "tum"]).lastLine
        let donor = try pool.jobFile("donor-tum", "kind: donor-policy\nname: tum\ngrace: 2s\npermit:\n  - id: everyone\n")
        try await pool.cliOK(["policy", "apply", donor], token: tumToken)
        try await pool.donateToEveryone("mit")
        pool.uonToken = try await pool.cliOK(["tokens", "create", "--role", "partner-admin", "--partner", "uon"]).lastLine
        try await pool.cliOK(["datasets", "add", "ke-health", "--steward", "uon", "--class", "health", "--allow", "KE"], token: pool.uonToken)
        try await pool.startAgent("de1", partner: "tum", region: "eu-de-1", resources: "{cpus: 2, memory: 4Gi}")
        }
    }
}

@Suite("End to end: fair sharing, reclaim and quotas", .serialized, .enabled(if: Pool.isAvailable, "needs COMITY_BIN_DIR (run ops/test)"), SharingPoolTrait())
struct SharingEndToEndTests {
    var pool: Pool { Pool.current! }

    func why(_ job: Int64) async throws -> Explanation {
        try WireJSON.decoder().decode(Explanation.self, from: Data(try await pool.cliOK(["why", String(job), "--output", "json"]).stdout.utf8))
    }

    func events(_ job: Int64) async throws -> [JobEventView] {
        let result = try await pool.run("/usr/bin/curl", ["-fsS", "-H", "Authorization: Bearer \(pool.adminToken)", "\(pool.server)/v1/jobs/\(job)/events"])
        #expect(result.status == 0, "\(result)")
        return try WireJSON.decoder().decode(JobEventList.self, from: Data(result.stdout.utf8)).events
    }

    func job(_ name: String, project: String, command: String, inputs: [String] = []) throws -> String {
        try pool.jobFile(name, """
            name: \(name)
            project: \(project)
            command: "\(command)"
            inputs: [\(inputs.joined(separator: ", "))]
            resources: {cpus: 2, memory: 256Mi}
            retries: 0
            """)
    }

    @Test("an owner's job preempts a borrowing guest on its host after the donor's grace; the guest requeues and completes elsewhere; a job that could not legally use the host preempts nothing")
    func ownerReclaimsItsHost() async throws {
        // uon has no hardware: its job borrows tum's host.
        let guest = try await pool.submit(try job("guest", project: "asr", command: "sleep 6"))
        let running = try await pool.waitFor(guest, [.running])
        #expect(running.host == "de1")

        // tum's job that reads Kenyan data cannot use its own German host: it must not cause a preemption.
        let illegal = try await pool.submit(try job("needs-kenya", project: "llm", command: "true", inputs: ["ke-health"]))
        let owner = try await pool.submit(try job("owner", project: "llm", command: "sleep 4"))

        try await eventually("the guest is told it will be preempted for the owner's job", timeout: .seconds(30)) {
            try await events(guest).contains { $0.kind == "preemption-scheduled" && $0.message.contains("job \(owner)") }
        }
        try await eventually("the guest is preempted once the grace is over, and requeued", timeout: .seconds(30)) {
            try await events(guest).contains { $0.kind == "preempted" && $0.message.contains("job \(owner)") }
        }
        let ownerRunning = try await pool.waitFor(owner, [.running, .succeeded], timeout: .seconds(30))
        #expect(ownerRunning.host == "de1")
        #expect(try await events(owner).contains { $0.kind == "reclaim" && $0.message.contains("\(guest)") })

        // The preempted guest kept its retries (it has none) and completes on the host that joins now.
        try await pool.startAgent("us1", partner: "mit", region: "us-east-1", resources: "{cpus: 2, memory: 4Gi}")
        let done = try await pool.waitFor(guest, [.succeeded], timeout: .seconds(60))
        #expect(done.host == "us1")
        let finished = try await pool.waitFor(owner, [.succeeded], timeout: .seconds(60))
        #expect(finished.host == "de1")
        #expect(!(try await events(guest)).contains { $0.message.contains("job \(illegal)") })

        let waiting = try await why(illegal)
        #expect(waiting.outcome == .pending)
        #expect(waiting.summary.contains("RESIDENCY(ke-health"), "\(waiting.summary)")
        #expect(try await pool.job(illegal).state == .queued)

        let audit = try await pool.cliOK(["audit", "log", "--job", String(guest), "--output", "json"])
        #expect(audit.stdout.contains("preempted"))
        _ = try await pool.cliOK(["cancel", String(illegal)])
    }

    @Test("a quota holds a job pending with the quota named in why; raising it lets the job run")
    func quotaHoldsJob() async throws {
        try await pool.cliOK(["quotas", "set", "--project", "llm", "--cpus", "1"])
        let held = try await pool.submit(try job("held", project: "llm", command: "true"))
        let explanation = try await why(held)
        #expect(explanation.outcome == .pending)
        let quota = try #require(explanation.jobReasons.first { $0.code == .quota }, "\(explanation.jobReasons)")
        #expect(quota.subject == "project llm")
        #expect(quota.detail.contains("cpus 0/1"), "\(quota.detail)")
        let shown = try await pool.cliOK(["quotas", "show"])
        #expect(shown.stdout.contains("llm"))
        let text = try await pool.cliOK(["why", String(held)])
        #expect(text.stdout.contains("QUOTA(project llm"), "\(text.stdout)")

        try await pool.cliOK(["quotas", "set", "--project", "llm", "--cpus", "4"])
        let done = try await pool.waitFor(held, [.succeeded], timeout: .seconds(60))
        #expect(done.host == "de1" || done.host == "us1")

        let shares = try await pool.cliOK(["shares", "--output", "json"])
        let report = try WireJSON.decoder().decode(SharesReport.self, from: Data(shares.stdout.utf8))
        #expect(Set(report.partners.map(\.partner)) == ["mit", "tum", "uon"])
        let usage = try await pool.cliOK(["usage", "--by", "project", "--format", "csv"])
        #expect(usage.stdout.split(separator: "\n").first?.contains("gpu") == true, "\(usage.stdout)")
        #expect(usage.stdout.contains("llm"))
    }
}
