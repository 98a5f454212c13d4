import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore
import Foundation

/// `comity-bench agent-memory`: one real `comity-agent` process's RSS, idle and while it runs a job.
struct AgentMemoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent-memory",
        abstract: "RSS of one real comity-agent, idle and while running a `sleep 3` job.",
        discussion: """
            Makes a join token, starts --agent-bin with a --resources file holding one GPU of the unique model \
            BENCHGPU (so that the job, which asks for gpu_model BENCHGPU, lands on it and nowhere else), reads its \
            VmRSS from /proc after it has idled, submits the job, samples VmRSS every 100 ms while the job runs, \
            and stops the agent with SIGTERM.
            """
    )

    @Option(help: "Server URL.")
    var server: String

    @Option(help: "An admin token.")
    var token: String

    @Option(help: "The comity-agent executable.")
    var agentBin: String

    @Option(help: "A folder for the agent's state, resources file and log.")
    var workDir: String

    @Option(help: "Seconds the agent idles before its idle RSS is read.")
    var idleSeconds: Int = 5

    @Option(help: "Write the results here (JSON) instead of standard output.")
    var out: String?

    func run() async throws {
        _ = BenchLogging.bootstrap
        var results = Results()
        try FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)
        let stateDir = workDir + "/state"
        let resourcesFile = workDir + "/resources.yaml"
        try """
            cpus: 4
            memory: 8Gi
            gpus:
              - {model: BENCHGPU, memory: 16Gi, uuid: GPU-bench-real-0}

            """.write(toFile: resourcesFile, atomically: true, encoding: .utf8)
        let name = "bench-real-agent-" + String(UInt32.random(in: 0..<UInt32.max), radix: 36)

        try await withHTTPClient { http in
            let admin = ComityClient(server: server, token: token, http: http)
            try await Federation.ensure(admin: admin)
            let researcher = try await Federation.researcher(admin: admin)
            let join = try await admin.createJoinToken(CreateJoinTokenRequest(partner: "tum", region: "eu-de-1"))

            let process = Process()
            process.executableURL = URL(fileURLWithPath: agentBin)
            process.arguments = [
                "--server", server, "--join-token", join.token, "--state-dir", stateDir, "--resources", resourcesFile,
                "--name", name, "--log-level", "warning",
            ]
            _ = FileManager.default.createFile(atPath: workDir + "/agent.log", contents: nil)
            let log = try FileHandle(forWritingTo: URL(fileURLWithPath: workDir + "/agent.log"))
            process.standardOutput = log
            process.standardError = log
            try process.run()
            let pid = process.processIdentifier
            try? String(pid).write(toFile: workDir + "/agent.pid", atomically: true, encoding: .utf8)
            say("agent-memory: comity-agent pid \(pid) enrolling as \(name)")
            defer {
                if process.isRunning { process.terminate() }
            }

            // Enrolled once the credential is in the state folder.
            var enrolled = false
            for _ in 0..<300 where !enrolled {
                try await Task.sleep(for: .milliseconds(100))
                guard process.isRunning else { throw BenchError("comity-agent exited with status \(process.terminationStatus); see \(workDir)/agent.log") }
                enrolled = FileManager.default.fileExists(atPath: stateDir + "/credential.json")
            }
            guard enrolled else { throw BenchError("comity-agent did not enroll within 30 s; see \(workDir)/agent.log") }
            try await Task.sleep(for: .seconds(idleSeconds))
            var idle: [Double] = []
            for _ in 0..<5 {
                if let rss = procStatusMiB(pid: pid) { idle.append(rss) }
                try await Task.sleep(for: .milliseconds(100))
            }
            guard !idle.isEmpty else { throw BenchError("cannot read /proc/\(pid)/status") }
            let idleRSS = Percentiles(idle).median
            results.set("agent_rss_mb", idleRSS, digits: 1)
            // What the RSS is made of: the agent's own memory (anonymous) and pages of its binary and libraries
            // (file-backed: clean, shared with every process that maps the same files, and reclaimable).
            if let anon = procStatusMiB(pid: pid, field: "RssAnon") { results.set("agent_rss_anon_mb", anon, digits: 1) }
            if let file = procStatusMiB(pid: pid, field: "RssFile") { results.set("agent_rss_file_mb", file, digits: 1) }
            let parts = ["RssAnon", "RssFile", "RssShmem"].map { field in
                "\(field) \(procStatusMiB(pid: pid, field: field).map { String(format: "%.1f", $0) } ?? "?")"
            }
            if ProcessInfo.processInfo.environment["BENCH_SMAPS"] != nil,
                // Read to the end: /proc files report size 0, and String(contentsOfFile:) stops at its first read.
                let smaps = FileHandle(forReadingAtPath: "/proc/\(pid)/smaps")?.readDataToEndOfFile()
            {
                FileManager.default.createFile(atPath: workDir + "/agent.smaps", contents: smaps)
            }
            say("agent-memory: idle VmRSS \(String(format: "%.1f", idleRSS)) MiB (\(parts.joined(separator: ", ")) MiB)")

            let job = try await researcher.submit(
                .object([
                    "name": .string("bench-agent-sleep"),
                    "project": .string(Federation.project),
                    "command": .array([.string("sleep"), .string("3")]),
                    "resources": .object(["cpus": .number(1), "memory": .string("1Gi"), "gpus": .number(1), "gpu_model": .string("BENCHGPU")]),
                ]))
            var view = job
            let deadline = Ticks.now() + 30_000_000_000
            while !(view.state == .running || view.state.isTerminal), Ticks.now() < deadline {
                view = try await researcher.job(job.id, waitWhile: view.state, waitSeconds: 5)
            }
            guard view.state == .running else { throw BenchError("the BENCHGPU job did not start (state \(view.state.rawValue))") }
            var running: [Double] = []
            while view.state == .running, Ticks.now() < deadline {
                if let rss = procStatusMiB(pid: pid) { running.append(rss) }
                try await Task.sleep(for: .milliseconds(100))
                view = try await researcher.job(job.id)
            }
            if !view.state.isTerminal { view = try await researcher.job(job.id, waitWhile: view.state, waitSeconds: 10) }
            let peak = procStatusMiB(pid: pid, field: "VmHWM")
            results.set("agent_rss_running_mb", running.max() ?? .nan, digits: 1)
            if let peak { results.set("agent_rss_peak_mb", peak, digits: 1) }
            results.set("agent_job_state", view.state.rawValue)
            results.set("agent_job_host", view.host ?? "")
            say("agent-memory: running VmRSS max \(String(format: "%.1f", running.max() ?? .nan)) MiB over \(running.count) samples; job \(view.state.rawValue) on \(view.host ?? "?")")
            if view.host != name { results.note("agent-memory: the BENCHGPU job ran on \(view.host ?? "no host"), not on \(name)") }

            process.terminate()
            for _ in 0..<100 where process.isRunning { try await Task.sleep(for: .milliseconds(100)) }
            if process.isRunning { kill(pid, SIGKILL) }
        }
        try results.write(to: out)
    }
}
