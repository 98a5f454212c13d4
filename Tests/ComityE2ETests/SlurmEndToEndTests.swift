import ComityAPI
import ComityCore
import Foundation
import Testing

/// The private Slurm that `ops/test` starts (ops/lib/slurm.sh), if any.
private let slurmConf = ProcessInfo.processInfo.environment["COMITY_TEST_SLURM_CONF"].flatMap { $0.isEmpty ? nil : $0 }

/// A pool whose only host is a gateway agent into the private Slurm's partition `comity`: tum lends it to everyone.
struct SlurmPoolTrait: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(
        for test: Test,
        testCase: Test.Case?,
        performing function: @Sendable () async throws -> Void
    ) async throws {
        try await Pool.serve(function) { pool in
            for arguments in [
                ["jurisdictions", "add", "DE"], ["regions", "add", "eu-de-1", "--jurisdiction", "DE"],
                ["partners", "add", "tum", "--jurisdiction", "DE"], ["projects", "add", "llm", "--partner", "tum"],
            ] {
                try await pool.cliOK(arguments)
            }
            try await pool.donateToEveryone("tum")
            let join = try await pool.cliOK(["hosts", "join-token", "--partner", "tum", "--region", "eu-de-1"])
            // No --resources: the host offers what sinfo says the partition has.
            let arguments = [
                "--server", pool.server, "--state-dir", pool.directory.appending(path: "agents/slurm-gw").path,
                "--name", "slurm-gw", "--kill-grace", "2s", "--runner", "slurm", "--slurm-partition", "comity",
                "--slurm-conf", slurmConf ?? "",
            ]
            pool.agentArguments["slurm-gw"] = arguments
            pool.agents["slurm-gw"] = try await pool.spawn(
                "comity-agent",
                arguments + ["--join-token", join.lastLine],
                log: "agent-slurm-gw.log"
            )
            try await eventually("agent slurm-gw is enrolled and active") {
                let hosts = try await pool.cliOK(["hosts", "--output", "json"])
                return hosts.stdout.contains("\"slurm-gw\"") && hosts.stdout.contains("active")
            }
        }
    }
}

@Suite(
    "End to end: a gateway agent into Slurm",
    .serialized,
    .enabled(if: Pool.isAvailable, "needs COMITY_BIN_DIR (run ops/test)"),
    .enabled(if: slurmConf != nil, "needs a Slurm cluster: COMITY_TEST_SLURM_CONF is not set (run ops/test)"),
    SlurmPoolTrait()
)
struct SlurmEndToEndTests {
    var pool: Pool { Pool.current! }

    /// The Slurm jobs the gateway submitted for `name`, as `squeue` lists them now.
    func slurmJobs(named name: String) async throws -> [String] {
        let queue = try await pool.run(
            "/usr/bin/env",
            ["squeue", "-h", "-p", "comity", "-o", "%i %j"],
            environment: ["SLURM_CONF": slurmConf ?? ""]
        )
        #expect(queue.status == 0, "\(queue)")
        return queue.stdout.split(separator: "\n").compactMap { line in
            let words = line.split(separator: " ")
            guard words.count == 2, words[1].hasPrefix("comity-"), words[1].hasSuffix("-\(name)") else { return nil }
            return String(words[0])
        }
    }

    @Test("the gateway's host offers the partition's capacity, and its runtime is slurm")
    func inventory() async throws {
        let listed = try await pool.cliOK(["hosts", "--output", "json"])
        let hosts = try WireJSON.decoder().decode([HostView].self, from: Data(listed.stdout.utf8))
        let host = try #require(hosts.first { $0.name == "slurm-gw" })
        let conf = try String(contentsOfFile: try #require(slurmConf), encoding: .utf8)
        let node = try #require(conf.split(separator: "\n").first { $0.hasPrefix("NodeName=") })
        let cpus = try #require(node.split(separator: " ").first { $0.hasPrefix("CPUs=") }?.dropFirst(5))
        #expect(host.resources.cpuMillis == (Int(cpus) ?? 0) * 1000)
        #expect(host.resources.runtime?.runner == .slurm)
        #expect(host.resources.runtime?.available.contains(.slurm) == true)
    }

    @Test("a job submitted with the CLI runs through Slurm; its logs come back through comity logs")
    func submitRunLogs() async throws {
        let file = try pool.jobFile(
            "through-slurm",
            """
            name: through-slurm
            project: llm
            command: ["sh", "-c", "echo from-slurm; echo \\"job=$COMITY_JOB_ID slurm=$SLURM_JOB_ID\\"; echo err-line >&2"]
            resources: {cpus: 1, memory: 128Mi}
            max_runtime: 5m
            retries: 0
            """
        )
        let id = try await pool.submit(file)
        let job = try await pool.waitFor(id, [.succeeded, .failed, .cancelled])
        #expect(job.state == .succeeded, "\(job.reason ?? "")")
        #expect(job.host == "slurm-gw")
        let logs = try await pool.cliOK(["logs", String(id)])
        #expect(logs.stdout.contains("from-slurm\n"), "\(logs)")
        let slurmLine = try #require(logs.stdout.split(separator: "\n").first { $0.hasPrefix("job=\(id) slurm=") })
        #expect(Int(slurmLine.dropFirst("job=\(id) slurm=".count)) != nil, "the job ran as a Slurm job: \(slurmLine)")
        #expect(logs.stderr.contains("err-line"), "\(logs)")
    }

    @Test("cancelling a job with the CLI cancels its Slurm job")
    func cancel() async throws {
        let file = try pool.jobFile(
            "slurm-sleeper",
            """
            name: slurm-sleeper
            project: llm
            command: ["sleep", "300"]
            resources: {cpus: 1, memory: 64Mi}
            retries: 0
            """
        )
        let id = try await pool.submit(file)
        try await pool.waitFor(id, [.running])
        var slurmJobs: [String] = []
        try await eventually("the Slurm job for slurm-sleeper is queued") {
            slurmJobs = try await self.slurmJobs(named: "slurm-sleeper")
            return !slurmJobs.isEmpty
        }
        try await pool.cliOK(["cancel", String(id)])
        let job = try await pool.waitFor(id, [.succeeded, .failed, .cancelled])
        #expect(job.state == .cancelled)
        try await eventually("squeue no longer lists the cancelled Slurm job \(slurmJobs)") {
            try await self.slurmJobs(named: "slurm-sleeper").isEmpty
        }
    }
}
