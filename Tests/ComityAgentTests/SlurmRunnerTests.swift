import ComityAPI
import ComityAgent
import ComityCore
import Foundation
import Logging
import Subprocess
import Synchronization
import Testing

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// The private Slurm that `ops/test` starts (ops/lib/slurm.sh), if any.
enum TestSlurm {
    static let conf = ProcessInfo.processInfo.environment["COMITY_TEST_SLURM_CONF"].flatMap { $0.isEmpty ? nil : $0 }
    static let partition = "comity"
    static let commands = SlurmCommands(configurationFile: conf)
    static let isAvailable = conf != nil
    static let skipReason = Comment(
        rawValue: "needs a Slurm cluster: COMITY_TEST_SLURM_CONF is not set ("
            + (ProcessInfo.processInfo.environment["COMITY_TEST_SLURM_UNAVAILABLE"]
                ?? "run under ops/test, or start one with ops/lib/slurm.sh's slurm_start DIR") + ")"
    )

    /// `scontrol -o show job ID`'s fields.
    static func job(_ id: String) async -> [String: String] {
        SlurmCommands.fields(ofScontrolLine: await commands.run("scontrol", ["-o", "show", "job", id]).output)
    }

    /// `squeue -h -j ID -o %T`: the job's state while it is queued, running or completing; empty once it has left.
    static func queueState(_ id: String) async -> String {
        let result = await commands.run("squeue", ["-h", "-j", id, "-o", "%T"])
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A value from this cluster's slurm.conf node line (`CPUs`, `RealMemory`).
    static func nodeSetting(_ key: String) throws -> Int64 {
        let text = try String(contentsOfFile: try #require(conf), encoding: .utf8)
        let line = try #require(text.split(whereSeparator: \.isNewline).first { $0.hasPrefix("NodeName=") })
        let word = try #require(line.split(separator: " ").first { $0.hasPrefix(key + "=") })
        return try #require(Int64(word.dropFirst(key.count + 1)))
    }
}

/// Polls `condition` (every 100 ms) until it holds or `timeout` passes.
func eventuallyAsync(within timeout: Duration = .seconds(30), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(100))
    }
    return await condition()
}

/// Runs jobs through a ``SlurmRunner`` and keeps what they printed.
final class SlurmHarness: Sendable {
    let chunks = Mutex<[LogAppend]>([])
    let starts = Mutex<[Int32]>([])
    let control = JobControl()
    let workDirectory: String

    init() throws {
        workDirectory = try makeTemporaryDirectory()
    }

    deinit { try? FileManager.default.removeItem(atPath: workDirectory) }

    func job(
        _ command: [String],
        resources: ResourceRequest? = nil,
        maxRuntimeSeconds: Int64? = nil,
        attempt: Int64 = 7
    ) -> JobRunner.Job {
        JobRunner.Job(
            command: command,
            environment: ["PATH": "/usr/local/bin:/usr/bin:/bin", "GREETING": "it's $HOME \"quoted\""],
            workDirectory: workDirectory,
            maxRuntimeSeconds: maxRuntimeSeconds,
            resources: resources,
            attempt: attempt,
            name: "slurm test"
        )
    }

    func run(_ job: JobRunner.Job, partition: String = TestSlurm.partition, grace: Duration = .seconds(2)) async
        -> JobRunner.Outcome
    {
        var configuration = SlurmRunner.Configuration(
            partition: partition,
            commands: TestSlurm.commands,
            killGrace: grace
        )
        configuration.logs.flushInterval = .milliseconds(50)
        let runner = SlurmRunner(configuration: configuration, logger: quietLogger)
        return await runner.run(
            job,
            control: control,
            onStart: { pgid in self.starts.withLock { $0.append(pgid) } },
            sink: { chunk in self.chunks.withLock { $0.append(chunk) } }
        )
    }

    /// The Slurm job id, once `sbatch` accepted the job.
    var slurmJobID: String? {
        FileManager.default.contents(atPath: workDirectory + "/" + SlurmRunner.jobIDFileName)
            .flatMap { SlurmCommands.parseJobID(String(decoding: $0, as: UTF8.self)) }
    }

    /// Waits until the job runs on the node; returns its Slurm job id.
    func waitUntilRunning() async throws -> String {
        var id: String?
        let isRunning = await eventuallyAsync {
            id = slurmJobID
            guard let id else { return false }
            return await TestSlurm.queueState(id) == "RUNNING"
        }
        try #require(isRunning, "the Slurm job did not start running")
        return try #require(id)
    }

    func output(_ stream: LogStream) -> String {
        chunks.withLock { $0.filter { $0.stream == stream }.map(\.data).joined() }
    }
}

@Suite("Slurm runner: scripts, arguments and what Slurm prints")
struct SlurmParsingTests {
    @Test("the batch script exports the environment and execs the command with everything quoted")
    func scriptQuoting() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let tricky = #"it's "$HOME" `id` \ ; *"#
        let job = JobRunner.Job(
            command: ["/bin/sh", "-c", #"printf '%s|' "$1" "$TRICKY" "$CUDA_VISIBLE_DEVICES""#, "arg0", tricky],
            environment: ["TRICKY": tricky, "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "", "bad-name": "x"],
            workDirectory: directory,
            maxRuntimeSeconds: nil
        )
        let script = SlurmRunner.batchScript(for: job)
        #expect(script.hasPrefix("#!/bin/sh\n"))
        #expect(!script.contains("bad-name"))
        let path = directory + "/job.sh"
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await Subprocess.run(
            .path(FilePath("/bin/sh")),
            arguments: [path],
            environment: .custom([:]),
            output: .string(limit: 4096)
        )
        #expect(result.terminationStatus.isSuccess)
        #expect(result.standardOutput == "\(tricky)|\(tricky)||")
    }

    @Test("a job with GPUs leaves the device lists to Slurm; one without keeps them empty")
    func gpuVisibility() {
        var job = JobRunner.Job(
            command: ["true"],
            environment: ["CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"],
            workDirectory: "/w",
            maxRuntimeSeconds: nil,
            resources: ResourceRequest(cpuMillis: 1000, memoryBytes: 0)
        )
        #expect(SlurmRunner.batchScript(for: job).contains("export CUDA_VISIBLE_DEVICES=''"))
        job.resources?.gpus = 2
        let script = SlurmRunner.batchScript(for: job)
        #expect(!script.contains("CUDA_VISIBLE_DEVICES"))
        #expect(!script.contains("NVIDIA_VISIBLE_DEVICES"))
        #expect(script.contains("export CUDA_DEVICE_ORDER='PCI_BUS_ID'"))
    }

    @Test("sbatch gets the name, partition, folders and the resources rounded up")
    func submitArguments() {
        let job = JobRunner.Job(
            command: ["true"],
            environment: [:],
            workDirectory: "/state/work/42",
            maxRuntimeSeconds: 61,
            resources: ResourceRequest(cpuMillis: 1500, memoryBytes: (100 << 20) + 1, gpus: 2),
            attempt: 42,
            name: "train model/v2"
        )
        let arguments = SlurmRunner.submitArguments(for: job, partition: "gpu", script: "/state/work/42/job.sh")
        let joined = arguments.joined(separator: " ")
        #expect(joined.hasPrefix("--parsable --job-name comity-42-train-model-v2 --partition gpu"))
        #expect(joined.contains("--chdir /state/work/42"))
        #expect(joined.contains("--output /state/work/42/slurm-%j.out --error /state/work/42/slurm-%j.err"))
        #expect(joined.contains("--export=NONE"))
        #expect(joined.contains("--cpus-per-task 2 --mem 101M --gres=gpu:2 --time 2"))
        #expect(arguments.last == "/state/work/42/job.sh")

        let plain = JobRunner.Job(
            command: ["true"],
            environment: [:],
            workDirectory: "/w",
            maxRuntimeSeconds: nil,
            resources: ResourceRequest(cpuMillis: 250, memoryBytes: 0)
        )
        let plainArguments = SlurmRunner.submitArguments(for: plain, partition: "p", script: "/w/s")
        #expect(plainArguments.contains("--cpus-per-task"))
        #expect(!plainArguments.contains("--mem"), "--mem=0 would mean the whole node")
        #expect(!plainArguments.contains { $0.hasPrefix("--gres") })
        #expect(!plainArguments.contains("--time"))
    }

    @Test("sbatch --parsable answers and scontrol lines are read")
    func parsing() {
        #expect(SlurmCommands.parseJobID("1234\n") == "1234")
        #expect(SlurmCommands.parseJobID("1234;cluster\n") == "1234")
        #expect(SlurmCommands.parseJobID("sbatch: error: nope") == nil)
        let fields = SlurmCommands.fields(
            ofScontrolLine: "JobId=5 JobName=comity-7-x JobState=FAILED Reason=NonZeroExitCode ExitCode=2:0 "
                + "Command=/a b/c.sh WorkDir=/w"
        )
        #expect(fields["JobState"] == "FAILED")
        #expect(fields["Command"] == "/a b/c.sh")
        #expect(fields["WorkDir"] == "/w")
    }

    @Test(
        "final states map to outcomes",
        arguments: [
            ("COMPLETED", "0:0", nil, JobRunner.Outcome.exited(0)),
            ("FAILED", "2:0", nil, .exited(2)),
            ("FAILED", "0:9", nil, .exited(137)),
            ("TIMEOUT", "0:15", 90, .stopped(.maxRuntime(seconds: 90))),
        ] as [(String, String, Int64?, JobRunner.Outcome)]
    )
    func outcomes(state: String, exitCode: String, maxRuntime: Int64?, expected: JobRunner.Outcome) {
        let outcome = SlurmCommands.outcome(
            jobID: "9",
            fields: ["JobState": state, "ExitCode": exitCode],
            maxRuntimeSeconds: maxRuntime
        )
        #expect(outcome == expected)
    }

    @Test("Slurm's own ends are reported with the job and the state")
    func slurmEnds() {
        func outcome(_ state: String) -> JobRunner.Outcome {
            SlurmCommands.outcome(jobID: "9", fields: ["JobState": state, "ExitCode": "0:0"], maxRuntimeSeconds: nil)
        }
        guard case .oomKilled(let oom) = outcome("OUT_OF_MEMORY") else {
            Issue.record("OUT_OF_MEMORY is not oomKilled")
            return
        }
        #expect(oom.contains("Slurm job 9 ended OUT_OF_MEMORY"))
        for state in ["CANCELLED", "NODE_FAIL", "TIMEOUT", "PREEMPTED"] {
            guard case .failed(let message) = outcome(state) else {
                Issue.record("\(state) is not a failure")
                continue
            }
            #expect(message.contains("Slurm job 9 ended \(state)"))
        }
    }

    @Test("sinfo lines add up to the partition's capacity, GPUs from GRES")
    func capacity() throws {
        let text = """
            64 512000 gpu:a100:4(S:0-1) 2
            32 256000 (null) 3
            16 128000 gpu:2,mps:400 1
            """
        let resources = try SlurmPartition.parseCapacity(text, partition: "p")
        #expect(resources.cpuMillis == (64 * 2 + 32 * 3 + 16) * 1000)
        #expect(resources.memoryBytes == Int64(512_000 * 2 + 256_000 * 3 + 128_000) << 20)
        #expect(resources.gpus.count == 10)
        #expect(resources.gpus.filter { $0.model == "a100" }.count == 8)
        #expect(resources.gpus.map(\.index) == Array(0..<10))
        #expect(SlurmPartition.parseGPUs("gpu:h100:2(S:0,1),gpu:a100:1").map(\.count) == [2, 1])
        #expect(throws: SlurmPartition.CapacityError.self) { try SlurmPartition.parseCapacity("", partition: "p") }
        #expect(throws: SlurmPartition.CapacityError.self) { try SlurmPartition.parseCapacity("x y", partition: "p") }
    }

    @Test("--runner slurm needs a partition; a bad one or an unreadable slurm.conf is refused")
    func configuration() throws {
        let missing = AgentConfiguration(server: nil, joinToken: nil, stateDirectory: "/tmp/x", runner: .slurm)
        #expect(throws: AgentError.self) { try missing.validate() }
        let bad = AgentConfiguration(
            server: nil,
            joinToken: nil,
            stateDirectory: "/tmp/x",
            runner: .slurm,
            slurmPartition: "a b"
        )
        #expect(throws: AgentError.self) { try bad.validate() }
        let noFile = AgentConfiguration(
            server: nil,
            joinToken: nil,
            stateDirectory: "/tmp/x",
            runner: .slurm,
            slurmPartition: "comity",
            slurmConf: "/nonexistent/slurm.conf"
        )
        #expect(throws: AgentError.self) { try noFile.validate() }
        let good = AgentConfiguration(
            server: nil,
            joinToken: nil,
            stateDirectory: "/tmp/x",
            runner: .slurm,
            slurmPartition: "comity"
        )
        try good.validate()
    }
}

@Suite("Slurm runner against a real Slurm", .enabled(if: TestSlurm.isAvailable, TestSlurm.skipReason))
struct SlurmRunnerTests {
    @Test("a job's stdout and stderr arrive in order per stream, with its exit code")
    func exitCode() async throws {
        let harness = try SlurmHarness()
        let outcome = await harness.run(
            harness.job([
                "/bin/sh", "-c", #"for i in 1 2 3; do echo "out$i"; echo "err$i" >&2; done; echo "$GREETING"; exit 3"#,
            ])
        )
        #expect(outcome == .exited(3))
        #expect(harness.output(.stdout) == "out1\nout2\nout3\nit's $HOME \"quoted\"\n")
        #expect(harness.output(.stderr) == "err1\nerr2\nerr3\n")
        #expect(harness.starts.withLock { $0 } == [0])
        let seqs = harness.chunks.withLock { $0.map(\.seq) }
        #expect(seqs == Array(1...Int64(seqs.count)))
        let id = try #require(harness.slurmJobID)
        let fields = await TestSlurm.job(id)
        #expect(fields["JobName"] == "comity-7-slurm-test")
        #expect(fields["Partition"] == TestSlurm.partition)
    }

    @Test("a running job is followed to its end, its output streamed while it runs")
    func follow() async throws {
        let harness = try SlurmHarness()
        let marker = harness.workDirectory + "/go"
        async let outcome = harness.run(
            harness.job(["/bin/sh", "-c", "echo started; while [ ! -e '\(marker)' ]; do sleep 0.1; done; echo done"])
        )
        let id = try await harness.waitUntilRunning()
        let streamed = await eventuallyAsync { harness.output(.stdout) == "started\n" }
        #expect(streamed, "output reaches the sink while the job runs")
        #expect(await TestSlurm.queueState(id) == "RUNNING")
        #expect(FileManager.default.createFile(atPath: marker, contents: nil))
        #expect(await outcome == .exited(0))
        #expect(harness.output(.stdout) == "started\ndone\n")
        #expect(await TestSlurm.queueState(id) == "")
    }

    @Test("a stop cancels the Slurm job: outcome stopped, and squeue no longer lists it")
    func cancel() async throws {
        let harness = try SlurmHarness()
        async let outcome = harness.run(harness.job(["sleep", "300"]))
        let id = try await harness.waitUntilRunning()
        #expect(harness.control.stop(.server))
        #expect(await outcome == .stopped(.server))
        #expect(await TestSlurm.queueState(id) == "")
        let state = await TestSlurm.job(id)["JobState"]
        #expect(state != "COMPLETED" && state != "RUNNING", "the job was ended, not let finish")
    }

    @Test("a job that ignores SIGTERM is cancelled after the grace")
    func cancelAfterGrace() async throws {
        let harness = try SlurmHarness()
        async let outcome = harness.run(
            harness.job(["/bin/sh", "-c", "trap '' TERM; echo ready; sleep 300"]),
            grace: .milliseconds(500)
        )
        let id = try await harness.waitUntilRunning()
        #expect(await eventuallyAsync { harness.output(.stdout) == "ready\n" })
        harness.control.stop(.shutdown)
        #expect(await outcome == .stopped(.shutdown))
        #expect(await TestSlurm.queueState(id) == "")
        #expect(await TestSlurm.job(id)["JobState"] == "CANCELLED")
    }

    @Test("the runtime limit stops the job, and Slurm gets it as --time")
    func maxRuntime() async throws {
        let harness = try SlurmHarness()
        async let outcome = harness.run(harness.job(["sleep", "300"], maxRuntimeSeconds: 1))
        let id = try await harness.waitUntilRunning()
        #expect(await TestSlurm.job(id)["TimeLimit"] == "00:01:00")
        #expect(await outcome == .stopped(.maxRuntime(seconds: 1)))
        #expect(await TestSlurm.queueState(id) == "")
    }

    @Test("the job's CPUs and memory reach Slurm")
    func resources() async throws {
        let harness = try SlurmHarness()
        let request = ResourceRequest(cpuMillis: 1500, memoryBytes: 100 << 20)
        async let outcome = harness.run(harness.job(["sleep", "300"], resources: request))
        let id = try await harness.waitUntilRunning()
        let fields = await TestSlurm.job(id)
        #expect(fields["NumCPUs"] == "2")
        #expect(fields["MinMemoryNode"] == "100M")
        harness.control.stop(.server)
        #expect(await outcome == .stopped(.server))
    }

    @Test("sbatch's refusal is the job's failure, with Slurm's words")
    func refused() async throws {
        let harness = try SlurmHarness()
        let outcome = await harness.run(harness.job(["true"]), partition: "no-such-partition")
        guard case .failed(let message) = outcome else {
            Issue.record("expected a failure, got \(outcome)")
            return
        }
        #expect(message.contains("sbatch refused the job"))
        #expect(message.lowercased().contains("partition"))
        #expect(harness.starts.withLock { $0 }.isEmpty)
    }

    @Test("a Slurm job left by a previous agent is cancelled; its runner reports it cancelled outside Comity")
    func leftovers() async throws {
        let stateFolder = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: stateFolder) }
        let state = StateDirectory(path: stateFolder)
        try state.prepare()
        let attempt: Int64 = 9_001
        let work = try state.makeWorkDirectory(attempt: attempt)
        try RunningRecord(attempt: attempt, jobId: 1, pgid: 0, bootId: nil, startedAt: Date()).save(in: state)
        let runner = SlurmRunner(
            configuration: SlurmRunner.Configuration(partition: TestSlurm.partition, commands: TestSlurm.commands),
            logger: quietLogger
        )
        let job = JobRunner.Job(
            command: ["sleep", "300"],
            environment: ["PATH": "/usr/bin:/bin"],
            workDirectory: work,
            maxRuntimeSeconds: nil,
            attempt: attempt
        )
        async let outcome = runner.run(job, control: JobControl(), onStart: { _ in }, sink: { _ in })
        let isRunning = await eventuallyAsync {
            guard let data = FileManager.default.contents(atPath: work + "/" + SlurmRunner.jobIDFileName),
                let id = SlurmCommands.parseJobID(String(decoding: data, as: UTF8.self))
            else { return false }
            return await TestSlurm.queueState(id) == "RUNNING"
        }
        try #require(isRunning)
        await SlurmRunner.cancelLeftovers(in: state, commands: TestSlurm.commands, logger: quietLogger)
        guard case .failed(let message) = await outcome else {
            Issue.record("expected the runner to report the cancelled job as failed")
            return
        }
        #expect(message.contains("CANCELLED"))
    }

    @Test("the partition's capacity comes from sinfo, and the probe finds the partition")
    func inventory() async throws {
        let resources = try await SlurmPartition.capacity(partition: TestSlurm.partition, commands: TestSlurm.commands)
        #expect(resources.cpuMillis == Int(try TestSlurm.nodeSetting("CPUs")) * 1000)
        #expect(resources.memoryBytes == (try TestSlurm.nodeSetting("RealMemory")) << 20)
        #expect(resources.gpus.isEmpty)
        #expect(await SlurmPartition.probe(partition: TestSlurm.partition, commands: TestSlurm.commands) == .answers)
        guard case .unavailable(let why) = await SlurmPartition.probe(partition: "nope", commands: TestSlurm.commands)
        else {
            Issue.record("an unknown partition is reported available")
            return
        }
        #expect(why.contains("nope"))
        let runtime = RuntimeProbe.detect(runner: .slurm, slurm: .answers)
        #expect(runtime.available.contains(.slurm))
    }
}
