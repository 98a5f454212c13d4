import ComityAPI
import ComityCore
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Starts one pool for the whole suite: a server in embedded-database mode, four agents in three regions of two
/// jurisdictions, partners, projects and researcher tokens, all through the real CLI.
struct PoolTrait: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        try await Pool.serve(function) { pool in
            try await pool.cliOK(["jurisdictions", "add", "EU"])
            try await pool.cliOK(["jurisdictions", "add", "DE", "--within", "EU"])
            try await pool.cliOK(["jurisdictions", "add", "KE"])
            try await pool.cliOK(["regions", "add", "eu-de-1", "--jurisdiction", "DE"])
            try await pool.cliOK(["regions", "add", "ke-nbo-1", "--jurisdiction", "KE"])
            try await pool.cliOK(["partners", "add", "tum", "--jurisdiction", "DE"])
            try await pool.cliOK(["partners", "add", "uon", "--jurisdiction", "KE"])
            try await pool.cliOK(["projects", "add", "llm", "--partner", "tum"])
            try await pool.cliOK(["projects", "add", "asr", "--partner", "uon"])
            // Both partners lend their hosts to each other's projects (a partner without a policy takes no guests).
            for partner in ["tum", "uon"] { try await pool.donateToEveryone(partner) }
            try await pool.startAgent("cpu-a", partner: "tum", region: "eu-de-1", resources: "{cpus: 4, memory: 8Gi}")
            try await pool.startAgent("cpu-b", partner: "tum", region: "eu-de-1", resources: "{cpus: 4, memory: 8Gi}")
            try await pool.startAgent(
                "gpu-h", partner: "tum", region: "eu-de-1",
                resources: "{cpus: 16, memory: 64Gi, gpus: [{model: NVIDIA H100 80GB HBM3, memory: 80Gi, uuid: GPU-h0}, {model: NVIDIA H100 80GB HBM3, memory: 80Gi, uuid: GPU-h1}]}")
            try await pool.startAgent(
                "gpu-a", partner: "uon", region: "ke-nbo-1",
                resources: "{cpus: 8, memory: 32Gi, gpus: [{model: NVIDIA A100-SXM4-40GB, memory: 40Gi, uuid: GPU-a0}]}")
        }
    }
}

extension Pool {
    @TaskLocal static var current: Pool?

    /// Writes a job file into the pool's folder and returns its path.
    func jobFile(_ name: String, _ yaml: String) throws -> String {
        let path = directory.appending(path: "\(name).yaml").path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Submits a job file and returns the id from the last line of the CLI's output.
    func submit(_ path: String, token: String? = nil) async throws -> Int64 {
        let result = try await cliOK(["submit", path], token: token)
        return try #require(Int64(result.lastLine), "expected the job id alone on the last line: \(result)")
    }

    /// The ids of every job, as `comity jobs --output json` lists them (states may change; ids only grow).
    func jobIDs() async throws -> [Int64] {
        let list = try await cliOK(["jobs", "--output", "json", "--limit", "10000"])
        return try WireJSON.decoder().decode([JobView].self, from: Data(list.stdout.utf8)).map(\.id).sorted()
    }

    /// Publishes, as the partner's own admin, a donation policy admitting every guest.
    func donateToEveryone(_ partner: String) async throws {
        let token = try await cliOK(["tokens", "create", "--role", "partner-admin", "--partner", partner]).lastLine
        let file = try jobFile("donor-\(partner)", "kind: donor-policy\nname: \(partner)\npermit:\n  - id: everyone\n")
        try await cliOK(["policy", "apply", file], token: token)
    }

    func researcherToken(project: String) async throws -> String {
        try await cliOK(["tokens", "create", "--role", "researcher", "--project", project]).lastLine
    }
}

@Suite("End to end: server, PostgreSQL, agents and CLI", .serialized, .enabled(if: Pool.isAvailable, "needs COMITY_BIN_DIR (run ops/test)"), PoolTrait())
struct EndToEndTests {
    var pool: Pool { Pool.current! }

    @Test("submit → runs on an agent → logs stream back → succeeded")
    func submitRunLogs() async throws {
        let file = try pool.jobFile("hello", """
            name: hello
            project: llm
            command: ["sh", "-c", "echo line-one; echo to-stderr >&2; echo line-two; echo \\"array=$COMITY_JOB_ID\\""]
            resources: {cpus: 1, memory: 256Mi}
            max_runtime: 5m
            """)
        let id = try await pool.submit(file)
        let job = try await pool.waitFor(id, [.succeeded, .failed, .cancelled])
        #expect(job.state == .succeeded)
        #expect(job.exitCode == 0)
        #expect(["cpu-a", "cpu-b"].contains(job.host ?? ""), "a CPU job should prefer hosts without GPUs, went to \(job.host ?? "nowhere")")
        let logs = try await pool.cliOK(["logs", String(id)])
        #expect(logs.stdout.contains("line-one\n"))
        #expect(logs.stdout.contains("line-two\n"))
        #expect(logs.stdout.contains("array=\(id)"))
        #expect(logs.stderr.contains("to-stderr"))
        let list = try await pool.cliOK(["jobs", "--output", "json"])
        #expect(list.stdout.contains("\"hello\""))
        // Operations endpoints: liveness, and Prometheus metrics that saw the placement.
        #expect(try await pool.run("/usr/bin/curl", ["-fsS", "\(pool.server)/healthz"]).stdout.contains("ok"))
        let metrics = try await pool.run("/usr/bin/curl", ["-fsS", "\(pool.server)/metrics"]).stdout
        #expect(metrics.contains("comity_placements_total"), "metrics: \(metrics.prefix(500))")
        // Without a token, the API answers 401.
        let anonymous = try await pool.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "\(pool.server)/v1/jobs"])
        #expect(anonymous.stdout == "401")
    }

    @Test("a failing job ends failed with its exit code, and submit --wait says so")
    func failingJob() async throws {
        let file = try pool.jobFile("fails", """
            name: fails
            project: llm
            command: ["sh", "-c", "echo about to fail; exit 3"]
            resources: {cpus: 1, memory: 128Mi}
            retries: 2
            """)
        let result = try await pool.cli(["submit", file, "--wait"])
        #expect(result.status != 0, "submit --wait must fail for a failing job: \(result)")
        let id = try #require(result.stdout.split(separator: "\n").compactMap { Int64($0.trimmingCharacters(in: .whitespaces)) }.first)
        let job = try await pool.job(id)
        #expect(job.state == .failed)
        #expect(job.exitCode == 3)
        #expect(job.attempts == 1, "a non-zero exit is final; retries cover lost attempts only")
    }

    @Test("cancel stops a running job and its whole process group")
    func cancelRunningJob() async throws {
        let pidFile = pool.directory.appending(path: "cancel.pid").path
        let file = try pool.jobFile("long", """
            name: long
            project: llm
            command: ["sh", "-c", "echo $$ > \(pidFile); sleep 300 & sleep 300; wait"]
            resources: {cpus: 1, memory: 128Mi}
            """)
        let id = try await pool.submit(file)
        try await eventually("the job writes its pid") { FileManager.default.fileExists(atPath: pidFile) }
        let pgid = try #require(pid_t(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(kill(-pgid, 0) == 0, "the job's process group runs")
        #expect(try await pool.job(id).state == .running)
        try await pool.cliOK(["cancel", String(id)])
        let job = try await pool.waitFor(id, [.cancelled, .failed, .succeeded], timeout: .seconds(30))
        #expect(job.state == .cancelled)
        try await eventually("the process group is gone", timeout: .seconds(15)) {
            kill(-pgid, 0) == -1 && errno == ESRCH
        }
    }

    @Test("an agent killed with SIGKILL mid-job: the job requeues and another agent finishes it")
    func agentKilledMidJob() async throws {
        let file = try pool.jobFile("survivor", """
            name: survivor
            project: llm
            command: ["sh", "-c", "echo started on $(hostname); sleep 3; echo finished"]
            resources: {cpus: 3, memory: 1Gi}
            retries: 2
            """)
        let id = try await pool.submit(file)
        let running = try await pool.waitFor(id, [.running])
        let victim = try #require(running.host)
        try #require(pool.agents[victim] != nil, "ran on \(victim), which is not an agent this test started")
        pool.killAgent(victim)
        let done = try await pool.waitFor(id, [.succeeded, .failed, .cancelled], timeout: .seconds(90))
        #expect(done.state == .succeeded)
        #expect(done.host != victim)
        #expect(done.attempts == 2)
        let events = try await pool.cliOK(["job", String(id)])
        #expect(events.stdout.contains("lost"), "the job's events should record the lost attempt: \(events.stdout)")
        // Replace the lost capacity for the tests that follow.
        try await pool.startAgent("cpu-c", partner: "tum", region: "eu-de-1", resources: "{cpus: 4, memory: 8Gi}")
    }

    @Test("a researcher cannot see or touch another project's jobs")
    func researcherIsolation() async throws {
        let asr = try await pool.researcherToken(project: "asr")
        let llm = try await pool.researcherToken(project: "llm")
        let file = try pool.jobFile("secret", """
            name: secret-asr-job
            project: asr
            command: ["sh", "-c", "sleep 1"]
            resources: {cpus: 1, memory: 128Mi}
            """)
        let id = try await pool.submit(file, token: asr)
        let peek = try await pool.cli(["job", String(id), "--output", "json"], token: llm)
        #expect(peek.status != 0)
        #expect(!peek.stdout.contains("secret-asr-job"))
        let list = try await pool.cliOK(["jobs", "--output", "json"], token: llm)
        #expect(!list.stdout.contains("secret-asr-job"))
        let cancel = try await pool.cli(["cancel", String(id)], token: llm)
        #expect(cancel.status != 0)
        let logs = try await pool.cli(["logs", String(id)], token: llm)
        #expect(logs.status != 0)
        // Submitting into someone else's project is refused.
        let foreign = try await pool.cli(["submit", file], token: llm)
        #expect(foreign.status != 0)
        #expect(foreign.stderr.contains("project"))
        // The owner still sees it, untouched.
        let own = try await pool.job(id, token: asr)
        #expect(own.state != .cancelled)
    }

    @Test("a malformed job file is rejected with field-level messages and nothing is stored")
    func malformedJobFile() async throws {
        let before = try await pool.jobIDs()
        let file = try pool.jobFile("bad", """
            name: bad
            project: llm
            comand: ["true"]
            resources: {cpus: 2, memory: lots}
            priority: high
            """)
        let result = try await pool.cli(["submit", file])
        #expect(result.status != 0)
        #expect(result.stderr.contains("comand"))
        #expect(result.stderr.contains("did you mean"))
        #expect(result.stderr.contains("resources.memory"))
        #expect(result.stderr.contains("priority"))
        #expect(try await pool.jobIDs() == before, "nothing may be stored for a rejected job")
    }

    @Test("a GPU job lands only on a host with a matching GPU and sees only its GPUs")
    func gpuJobs() async throws {
        let h100 = try pool.jobFile("h100", """
            name: h100-job
            project: llm
            command: ["sh", "-c", "echo cuda=[$CUDA_VISIBLE_DEVICES] nvidia=[$NVIDIA_VISIBLE_DEVICES]"]
            resources: {cpus: 2, memory: 1Gi, gpus: 1, gpu_model: H100, gpu_memory: 80Gi}
            """)
        let cpu = try pool.jobFile("nogpu", """
            name: no-gpu-job
            project: llm
            command: ["sh", "-c", "echo cuda=[$CUDA_VISIBLE_DEVICES]"]
            resources: {cpus: 1, memory: 128Mi}
            """)
        let asrToken = try await pool.researcherToken(project: "asr")
        let a100 = try pool.jobFile("a100", """
            name: a100-job
            project: asr
            command: ["sh", "-c", "echo cuda=[$CUDA_VISIBLE_DEVICES]"]
            resources: {cpus: 1, memory: 1Gi, gpus: 1, gpu_model: A100}
            """)
        let h100ID = try await pool.submit(h100)
        let cpuID = try await pool.submit(cpu)
        let a100ID = try await pool.submit(a100, token: asrToken)
        let h100Job = try await pool.waitFor(h100ID, [.succeeded, .failed, .cancelled])
        #expect(h100Job.state == .succeeded)
        #expect(h100Job.host == "gpu-h")
        #expect(h100Job.gpuIndices == [0])
        let h100Logs = try await pool.cliOK(["logs", String(h100ID)]).stdout
        #expect(h100Logs.contains("cuda=[GPU-h0] nvidia=[GPU-h0]"), "got: \(h100Logs)")
        let cpuJob = try await pool.waitFor(cpuID, [.succeeded, .failed, .cancelled])
        #expect(cpuJob.state == .succeeded)
        #expect(try await pool.cliOK(["logs", String(cpuID)]).stdout.contains("cuda=[]"))
        let a100Job = try await pool.waitFor(a100ID, [.succeeded, .failed, .cancelled])
        #expect(a100Job.host == "gpu-a")
        #expect(try await pool.cliOK(["logs", String(a100ID)]).stdout.contains("cuda=[GPU-a0]"))
        // A GPU model no host has stays queued.
        let b200 = try pool.jobFile("b200", """
            name: b200-job
            project: llm
            command: ["true"]
            resources: {cpus: 1, memory: 1Gi, gpus: 1, gpu_model: B200}
            """)
        let b200ID = try await pool.submit(b200)
        // A job submitted after it at the same priority is examined after it in the same or a later pass: once
        // that one has run, the scheduler has seen the B200 job and left it queued.
        let probe = try await pool.submit(cpu)
        try await pool.waitFor(probe, [.succeeded, .failed, .cancelled])
        #expect(try await pool.job(b200ID).state == .queued)
        try await pool.cliOK(["cancel", String(b200ID)])
    }

    @Test("the audit ledger of all this activity (thousands of entries) verifies, extends a kept checkpoint, and tells where jobs ran")
    func auditLedgerVerifies() async throws {
        let noop = try pool.jobFile("noop", """
            name: noop
            project: llm
            command: ["true"]
            resources: {cpus: 1, memory: 16Mi}
            retries: 2
            """)
        let submitted = try await pool.cliOK(["submit", noop, "--array", "1-800"])
        let last = try #require(Int64(submitted.lastLine))
        try await eventually("800 array jobs finish", timeout: .seconds(240)) {
            let done = try await pool.cliOK(["jobs", "--state", "succeeded", "--limit", "10000", "--output", "json"])
            let ids = try WireJSON.decoder().decode([JobView].self, from: Data(done.stdout.utf8)).map(\.id)
            return ids.filter { $0 > last - 800 && $0 <= last }.count == 800
        }
        let folder = pool.directory.appending(path: "checkpoints").path
        try await pool.cliOK(["audit", "checkpoint", "--save", folder])
        let more = try await pool.submit(noop)
        try await pool.waitFor(more, [.succeeded])

        let verified = try await pool.cliOK(["audit", "verify", "--against", folder, "--page", "997"])
        let line = verified.stdout
        #expect(line.hasPrefix("ok: "), "\(verified)")
        let count = try #require(Int(line.dropFirst(4).prefix { $0 != " " }))
        #expect(count >= 3_200, "800 jobs submitted, placed, started and ended: \(line)")
        #expect(line.contains("extends all 1 kept checkpoint"))

        let placement = try await pool.cliOK(["audit", "placement", String(last)]).stdout
        #expect(placement.contains("submitted") && placement.contains("placed on") && placement.contains("started") && placement.contains("ended"))
        let csv = try await pool.cliOK(["audit", "export", "--format", "csv", "--job", String(last)]).stdout
        #expect(csv.split(separator: "\n").count == 5, "a header and four entries: \(csv)")
        // A refused request is recorded too.
        let researcher = try await pool.researcherToken(project: "asr")
        _ = try await pool.cli(["tokens", "create", "--role", "admin"], token: researcher)
        let denied = try await pool.cliOK(["audit", "log", "--kind", "denied", "--output", "json"])
        #expect(denied.stdout.contains("may not create tokens"), "\(denied.stdout)")
    }
}
