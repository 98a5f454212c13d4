import ComityAPI
import ComityCore
import Foundation
import Testing

/// A three-jurisdiction pool: uon in Kenya, tum in Germany (within the EU), mit in the US; tum and mit lend their
/// hosts to everyone, uon's Kenyan health corpus may be processed only in Kenya and only for health research. Every
/// agent runs its jobs in the sandbox (bubblewrap), as hosts that take non-public data must.
struct SovereignPoolTrait: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        try await Pool.serve(function) { pool in
            for arguments in [
                ["jurisdictions", "add", "EU"], ["jurisdictions", "add", "DE", "--within", "EU"], ["jurisdictions", "add", "KE"],
                ["jurisdictions", "add", "US"], ["regions", "add", "ke-nbo-1", "--jurisdiction", "KE"],
                ["regions", "add", "eu-de-1", "--jurisdiction", "DE"], ["regions", "add", "us-east-1", "--jurisdiction", "US"],
                ["partners", "add", "uon", "--jurisdiction", "KE"], ["partners", "add", "tum", "--jurisdiction", "DE"],
                ["partners", "add", "mit", "--jurisdiction", "US"],
                ["projects", "add", "asr", "--partner", "uon", "--purpose", "health-research"], ["projects", "add", "llm", "--partner", "tum"],
            ] {
                try await pool.cliOK(arguments)
        }
        for partner in ["tum", "mit"] { try await pool.donateToEveryone(partner) }
        pool.uonToken = try await pool.cliOK(["tokens", "create", "--role", "partner-admin", "--partner", "uon"]).lastLine
        try await pool.cliOK(
            ["datasets", "add", "ke-health", "--steward", "uon", "--class", "health", "--allow", "KE", "--purpose", "health-research"],
            token: pool.uonToken)
        try await pool.startAgent("ke1", partner: "uon", region: "ke-nbo-1", resources: "{cpus: 2, memory: 4Gi}", runner: .sandbox)
        try await pool.startAgent("de1", partner: "tum", region: "eu-de-1", resources: "{cpus: 2, memory: 4Gi}", runner: .sandbox)
        try await pool.startAgent("us1", partner: "mit", region: "us-east-1", resources: "{cpus: 2, memory: 4Gi}", runner: .sandbox)
        }
    }
}

@Suite(
    "End to end: sovereignty rules in a three-jurisdiction pool", .serialized, .enabled(if: Pool.isAvailable, "needs COMITY_BIN_DIR (run ops/test)"),
    .enabled(if: Pool.canSandbox, "needs bubblewrap that can create namespaces (ops/test installs bubblewrap)"), SovereignPoolTrait())
struct SovereigntyEndToEndTests {
    var pool: Pool { Pool.current! }

    func why(_ job: Int64) async throws -> Explanation {
        try WireJSON.decoder().decode(Explanation.self, from: Data(try await pool.cliOK(["why", String(job), "--output", "json"]).stdout.utf8))
    }

    func healthJob(
        _ name: String, command: String = "true", inputs: [String] = ["ke-health"], outputs: [String] = [], project: String = "asr",
        network: Bool = false
    ) throws -> String {
        try pool.jobFile(name, """
            name: \(name)
            project: \(project)
            command: "\(command)"
            inputs: [\(inputs.joined(separator: ", "))]
            outputs: [\(outputs.joined(separator: ", "))]
            resources: {cpus: 1, memory: 256Mi}
            network: \(network)
            """)
    }

    @Test("a residency-bound job runs only in its jurisdiction; it pends with the reasons while that host is down and runs when it returns")
    func residencyAndHostDown() async throws {
        let first = try await pool.submit(try healthJob("ke-first"))
        let done = try await pool.waitFor(first, [.succeeded])
        #expect(done.host == "ke1")

        pool.killAgent("ke1")
        try await eventually("ke1 is down", timeout: .seconds(30)) {
            let hosts = try WireJSON.decoder().decode([HostView].self, from: Data(try await pool.cliOK(["hosts", "--output", "json"]).stdout.utf8))
            return hosts.contains { $0.name == "ke1" && $0.state == .down }
        }
        let waiting = try await pool.submit(try healthJob("ke-waits"))
        let explanation = try await why(waiting)
        #expect(explanation.outcome == .pending)
        #expect(explanation.summary.hasPrefix("0/3 hosts eligible: 2 RESIDENCY(ke-health: KE only), 1 HOST_DOWN"), "\(explanation.summary)")
        let byHost = Dictionary(uniqueKeysWithValues: explanation.hosts.map { ($0.host, $0.reasons.map(\.label)) })
        #expect(byHost["ke1"] == ["HOST_DOWN"])
        #expect(byHost["de1"] == ["RESIDENCY(ke-health)"])
        #expect(byHost["us1"] == ["RESIDENCY(ke-health)"])
        #expect(explanation.permittedJurisdictions == ["KE"])
        // The table form says the same.
        let table = try await pool.cliOK(["why", String(waiting)])
        #expect(table.stdout.contains("0/3 hosts eligible"))
        #expect(table.stdout.contains("RESIDENCY(ke-health) [dataset/ke-health@v1]: host jurisdiction US not in KE"))
        #expect(try await pool.job(waiting).state == .queued)

        try await pool.restartAgent("ke1")
        let ran = try await pool.waitFor(waiting, [.succeeded])
        #expect(ran.host == "ke1")
    }

    @Test("a job the rules can never admit is rejected with every reason; explain says the same without submitting")
    func rejectedAtSubmission() async throws {
        let file = try healthJob("wrong-purpose", project: "llm")
        let explained = try WireJSON.decoder().decode(Explanation.self, from: Data(try await pool.cliOK(["explain", file, "--output", "json"]).stdout.utf8))
        #expect(explained.outcome == .rejected)
        #expect(explained.jobReasons.map(\.label) == ["E_USE_CONDITION(PURPOSE,ke-health)"])
        let before = try await pool.jobIDs()
        let submitted = try await pool.cli(["submit", file])
        #expect(submitted.status == 1)
        #expect(submitted.stderr.contains("E_USE_CONDITION(PURPOSE,ke-health)"), "\(submitted)")
        #expect(try await pool.jobIDs() == before)
    }

    @Test("a rule change stops a running job that became non-compliant and it runs again where the new rule allows")
    func ruleChangeStopsRunningJob() async throws {
        let running = try await pool.submit(try healthJob("long-ke", command: "sleep 300"))
        let started = try await pool.waitFor(running, [.running])
        #expect(started.host == "ke1")
        let toEU = try pool.jobFile("ke-health-eu", """
            kind: dataset
            name: ke-health
            steward: uon
            class: health
            residency: {allow: [EU]}
            use: {purposes: [health-research]}
            reason: processing moved to the EU
            """)
        let dry = try await pool.cliOK(["policy", "apply", "--dry-run", toEU], token: pool.uonToken)
        #expect(dry.stdout.contains("would apply dataset/ke-health v2"))
        #expect(dry.stdout.contains("stop      \(running) long-ke (asr) on ke1: RESIDENCY(ke-health)"), "\(dry.stdout)")
        #expect(try await pool.job(running).state == .running)

        try await pool.cliOK(["policy", "apply", toEU], token: pool.uonToken)
        try await eventually("the job is stopped on ke1 and runs again on de1", timeout: .seconds(60)) {
            let job = try await pool.job(running)
            return job.state == .running && job.host == "de1"
        }
        let events = try await pool.cliOK(["job", String(running)]).stdout
        #expect(events.contains("policy-stop"))
        // The process on ke1 was really stopped: the agent reported the attempt's end.
        try await eventually("ke1's agent stopped the process") { pool.log("agent-ke1.log").contains("server asked to stop attempt") }
        try await pool.cliOK(["cancel", String(running)])
        try await pool.waitFor(running, [.cancelled])
        let history = try await pool.cliOK(["policy", "history", "dataset/ke-health"]).stdout
        #expect(history.contains("v2") && history.contains("processing moved to the EU"))
        // Back to Kenya only, for the tests after this one.
        try await pool.cliOK(
            ["datasets", "add", "ke-health", "--steward", "uon", "--class", "health", "--allow", "KE", "--purpose", "health-research"],
            token: pool.uonToken)
    }

    @Test("a model trained on the Kenyan corpus inherits its residency, and a job loading the model is bound to Kenya")
    func derivedModelInheritsResidency() async throws {
        let training = try await pool.submit(try healthJob("train", outputs: ["ke-asr-model"]))
        #expect(try await pool.waitFor(training, [.succeeded]).host == "ke1")
        let dataset = try WireJSON.decoder().decode(
            DatasetView.self, from: Data(try await pool.cliOK(["datasets", "show", "ke-asr-model", "--output", "json"]).stdout.utf8))
        #expect(dataset.derivedFrom == ["ke-health"] && dataset.dataClass == .health && dataset.producedByJob == training)

        let serving = try healthJob("serve", inputs: ["ke-asr-model"])
        let explained = try WireJSON.decoder().decode(Explanation.self, from: Data(try await pool.cliOK(["explain", serving, "--output", "json"]).stdout.utf8))
        #expect(explained.permittedJurisdictions == ["KE"])
        let excluded = explained.hosts.filter { !$0.eligible }.map(\.host).sorted()
        #expect(excluded == ["de1", "us1"])
        #expect(explained.hosts.first { $0.host == "de1" }?.reasons.map(\.label) == ["RESIDENCY(ke-asr-model←ke-health)"])
        let job = try await pool.submit(serving)
        #expect(try await pool.waitFor(job, [.succeeded]).host == "ke1")
    }

    @Test("a health job runs sandboxed: it cannot reach the server over the network nor read its agent's credential")
    func sandboxedAtRunTime() async throws {
        let state = pool.directory.appending(path: "agents/ke1").path
        let probe = try healthJob(
            "sandboxed",
            command: "if bash -c 'exec 3<>/dev/tcp/127.0.0.1/\(pool.port)' 2>/dev/null; then echo server-reached; else echo network-cut; fi; "
                + "if cat \(state)/credential.json >/dev/null 2>&1; then echo credential-read; else echo credential-hidden; fi")
        let job = try await pool.submit(probe)
        #expect(try await pool.waitFor(job, [.succeeded]).host == "ke1")
        let logs = try await pool.cliOK(["logs", String(job)]).stdout
        #expect(logs.contains("network-cut") && logs.contains("credential-hidden"), "\(logs)")
        // Outside the sandbox the credential is there.
        #expect(FileManager.default.fileExists(atPath: state + "/credential.json"))
    }

    @Test("a job asking for the network is rejected when its data forbids it (E_NETWORK)")
    func networkForbidden() async throws {
        let file = try healthJob("wants-network", network: true)
        let explained = try WireJSON.decoder().decode(Explanation.self, from: Data(try await pool.cliOK(["explain", file, "--output", "json"]).stdout.utf8))
        #expect(explained.outcome == .rejected)
        #expect(explained.jobReasons.map(\.label) == ["E_NETWORK(ke-health)"])
        let submitted = try await pool.cli(["submit", file])
        #expect(submitted.status == 1)
        #expect(submitted.stderr.contains("E_NETWORK(ke-health)"), "\(submitted)")
    }
}
