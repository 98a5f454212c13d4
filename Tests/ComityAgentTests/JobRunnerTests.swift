import ComityAPI
import ComityAgent
import Foundation
import Logging
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
func eventually(within timeout: Duration = .seconds(20), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return condition()
}

/// Whether the process group is gone: `kill(-pgid, 0)` fails with `ESRCH`.
func isGroupGone(_ pgid: Int32) -> Bool {
    kill(-pgid, 0) == -1 && errno == ESRCH
}

/// Runs jobs for the tests and keeps what they printed.
final class RunHarness: Sendable {
    let chunks = Mutex<[LogAppend]>([])
    let control = JobControl()
    let started: AsyncStream<Int32>
    private let startedContinuation: AsyncStream<Int32>.Continuation
    let workDirectory: String

    init() throws {
        workDirectory = try makeTemporaryDirectory()
        (started, startedContinuation) = AsyncStream.makeStream(of: Int32.self)
    }

    deinit { try? FileManager.default.removeItem(atPath: workDirectory) }

    func run(
        _ command: [String],
        environment: [String: String] = [:],
        grace: Duration = .seconds(2),
        maxRuntimeSeconds: Int64? = nil
    ) async -> JobRunner.Outcome {
        var fullEnvironment = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]
        fullEnvironment.merge(environment) { _, new in new }
        let runner = JobRunner(configuration: JobRunner.Configuration(killGrace: grace), logger: quietLogger)
        let job = JobRunner.Job(
            command: command,
            environment: fullEnvironment,
            workDirectory: workDirectory,
            maxRuntimeSeconds: maxRuntimeSeconds
        )
        return await runner.run(
            job,
            control: control,
            onStart: { [startedContinuation] pgid in startedContinuation.yield(pgid) },
            sink: { chunk in self.chunks.withLock { $0.append(chunk) } }
        )
    }

    /// The job's process group id, once it has started.
    func pgid() async -> Int32 {
        var iterator = started.makeAsyncIterator()
        return await iterator.next() ?? 0
    }

    func output(_ stream: LogStream) -> String {
        chunks.withLock { $0.filter { $0.stream == stream }.map(\.data).joined() }
    }
}

@Suite("Job runner")
struct JobRunnerTests {
    @Test("stdout and stderr are captured in order per stream, with the exit code")
    func output() async throws {
        let harness = try RunHarness()
        let outcome = await harness.run(["sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 3"])
        #expect(outcome == .exited(3))
        #expect(outcome.finishRequest.outcome == .exited && outcome.finishRequest.exitCode == 3)
        #expect(harness.output(.stdout) == "out1\nout2\n")
        #expect(harness.output(.stderr) == "err1\nerr2\n")
        let seqs = harness.chunks.withLock { $0.map(\.seq) }
        #expect(seqs == Array(1...Int64(seqs.count)))
    }

    @Test("both streams are drained concurrently, in chunks of at most 32 KiB")
    func largeOutput() async throws {
        let harness = try RunHarness()
        let script =
            "i=0; while [ $i -lt 3000 ]; do echo \"line $i of a long log\"; echo \"err $i\" >&2; i=$((i+1)); done"
        let outcome = await harness.run(["sh", "-c", script])
        #expect(outcome == .exited(0))
        let lines = harness.output(.stdout).split(separator: "\n")
        #expect(lines.count == 3000)
        #expect(lines.last == "line 2999 of a long log")
        #expect(harness.output(.stderr).split(separator: "\n").count == 3000)
        #expect(harness.chunks.withLock { $0.allSatisfy { $0.data.utf8.count <= 32 * 1024 } })
    }

    @Test("the job runs in its work folder with exactly the environment it was given")
    func environment() async throws {
        let harness = try RunHarness()
        let outcome = await harness.run(
            ["sh", "-c", "pwd; echo \"[$CUDA_VISIBLE_DEVICES] $COMITY_ATTEMPT_ID ${SECRET:-unset}\""],
            environment: ["CUDA_VISIBLE_DEVICES": "", "COMITY_ATTEMPT_ID": "42"]
        )
        #expect(outcome == .exited(0))
        let realWork = URL(fileURLWithPath: harness.workDirectory).resolvingSymlinksInPath().path
        #expect(harness.output(.stdout) == "\(realWork)\n[] 42 unset\n")
    }

    @Test("death by signal is reported as 128 + signal")
    func signalDeath() async throws {
        let harness = try RunHarness()
        #expect(await harness.run(["sh", "-c", "kill -KILL $$"]) == .exited(137))
    }

    @Test("a command that does not exist is an error, not an exit code")
    func notFound() async throws {
        let harness = try RunHarness()
        let outcome = await harness.run(["comity-no-such-command", "--flag"])
        guard case .failed(let message) = outcome else {
            Issue.record("expected a failure, got \(outcome)")
            return
        }
        #expect(message.contains("comity-no-such-command") && message.contains("not found"))
        #expect(outcome.finishRequest.outcome == .error)
    }

    @Test("stopping a job kills its whole process group")
    func killGroup() async throws {
        let harness = try RunHarness()
        async let outcome = harness.run(["sh", "-c", "sleep 300 & sleep 300"], grace: .seconds(5))
        let pgid = await harness.pgid()
        #expect(pgid > 1)
        // Both sleeps exist before the kill (the shell may have exec'd into the second one).
        #expect(await eventually { (ProcessTable.members(ofGroup: pgid)?.filter { !$0.isZombie }.count ?? 2) >= 2 })
        #expect(harness.control.stop(.server))
        #expect(await outcome == .stopped(.server))
        #expect(await eventually { isGroupGone(pgid) }, "process group \(pgid) still exists")
    }

    @Test("members that ignore SIGTERM get SIGKILL after the grace")
    func killEscalates() async throws {
        let harness = try RunHarness()
        async let outcome = harness.run(["sh", "-c", "trap '' TERM; sleep 300 & sleep 300"], grace: .milliseconds(300))
        let pgid = await harness.pgid()
        #expect(await eventually { (ProcessTable.members(ofGroup: pgid)?.filter { !$0.isZombie }.count ?? 2) >= 2 })
        harness.control.stop(.shutdown)
        let result = await outcome
        #expect(result == .stopped(.shutdown))
        #expect(result.finishRequest.outcome == .error && result.finishRequest.message == "agent shutting down")
        #expect(await eventually { isGroupGone(pgid) }, "process group \(pgid) still exists")
    }

    @Test("what a finished job leaves running is terminated")
    func leftovers() async throws {
        let harness = try RunHarness()
        let start = ContinuousClock.now
        async let outcome = harness.run(["sh", "-c", "sleep 300 & echo started"], grace: .seconds(5))
        let pgid = await harness.pgid()
        #expect(await outcome == .exited(0))
        #expect(harness.output(.stdout) == "started\n")
        #expect(await eventually { isGroupGone(pgid) }, "process group \(pgid) still exists")
        #expect(ContinuousClock.now - start < .seconds(60))
    }

    @Test("max_runtime stops the job with an error")
    func maxRuntime() async throws {
        let harness = try RunHarness()
        async let outcome = harness.run(["sleep", "300"], grace: .seconds(2), maxRuntimeSeconds: 1)
        let pgid = await harness.pgid()
        let result = await outcome
        #expect(result == .stopped(.maxRuntime(seconds: 1)))
        #expect(result.finishRequest.outcome == .error && result.finishRequest.message == "exceeded max_runtime 1s")
        #expect(await eventually { isGroupGone(pgid) })
    }

    @Test("a job stopped before it starts is not started")
    func stoppedBeforeStart() async throws {
        let harness = try RunHarness()
        harness.control.stop(.shutdown)
        #expect(await harness.run(["sh", "-c", "echo should not run"]) == .stopped(.shutdown))
        #expect(harness.chunks.withLock { $0.isEmpty })
    }

    @Test("a previous agent's leftover process group is found and killed")
    func leftoverRecords() async throws {
        let harness = try RunHarness()
        let stateDirectory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: stateDirectory) }
        let state = StateDirectory(path: stateDirectory)
        try state.prepare()
        async let outcome = harness.run(
            ["sh", "-c", "sleep 300 & sleep 300"],
            environment: ["COMITY_ATTEMPT_ID": "77"]
        )
        let pgid = await harness.pgid()
        #expect(await eventually { (ProcessTable.members(ofGroup: pgid)?.filter { !$0.isZombie }.count ?? 2) >= 2 })
        try RunningRecord(attempt: 77, jobId: 5, pgid: pgid, bootId: ProcessTable.bootID(), startedAt: Date()).save(
            in: state
        )
        // A record whose group belongs to another attempt is not acted on.
        try RunningRecord(attempt: 78, jobId: 6, pgid: pgid, bootId: ProcessTable.bootID(), startedAt: Date()).save(
            in: state
        )
        #expect(
            RunningRecord.isStillTheJob(
                RunningRecord(attempt: 78, jobId: 6, pgid: pgid, bootId: nil, startedAt: Date())
            ) == false
        )

        let found = await RunningRecord.killLeftovers(in: state, grace: .seconds(2), logger: quietLogger)
        #expect(Set(found.map(\.attempt)) == [77, 78])
        #expect(await outcome == .exited(128 + SIGTERM))
        #expect(await eventually { isGroupGone(pgid) }, "process group \(pgid) still exists")
        #expect(try FileManager.default.contentsOfDirectory(atPath: state.runningPath).isEmpty)
    }
}

@Suite("Job runner: jobs that close their output")
struct ClosedOutputTests {
    @Test("a job that closed stdout and stderr still runs to its end")
    func closedOutputExit() async throws {
        let harness = try RunHarness()
        let outcome = await harness.run(["sh", "-c", "echo bye; exec >&- 2>&-; sleep 1; exit 4"])
        #expect(outcome == .exited(4))
        #expect(harness.output(.stdout) == "bye\n")
    }

    @Test("a job that closed stdout and stderr can still be stopped")
    func closedOutputStop() async throws {
        let harness = try RunHarness()
        async let outcome = harness.run(
            ["sh", "-c", "exec >/dev/null 2>&1; touch closed; sleep 300"],
            grace: .seconds(2)
        )
        let pgid = await harness.pgid()
        let marker = harness.workDirectory + "/closed"
        #expect(await eventually { FileManager.default.fileExists(atPath: marker) })
        harness.control.stop(.server)
        #expect(await outcome == .stopped(.server))
        #expect(await eventually { isGroupGone(pgid) })
    }
}
