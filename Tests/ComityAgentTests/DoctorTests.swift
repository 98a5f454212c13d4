import ComityAPI
import ComityAgent
import ComityCore
import Foundation
import Testing

/// Where `ops/test` put the built binaries (`COMITY_BIN_DIR`), when it did.
let agentBinary = ProcessInfo.processInfo.environment["COMITY_BIN_DIR"].map { "\($0)/comity-agent" }
let hasAgentBinary = agentBinary.map { FileManager.default.isExecutableFile(atPath: $0) } ?? false
let hasNvidiaSMI = Inventory.findOnPath("nvidia-smi") != nil

/// Runs a program to its end; its output is small (the doctor's report).
func runProgram(
    _ path: String,
    _ arguments: [String],
    environment: [String: String]? = nil
) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let stdout = Pipe()
    let stderr = Pipe()
    process.standardOutput = stdout
    process.standardError = stderr
    try process.run()
    let out = stdout.fileHandleForReading.readDataToEndOfFile()
    let err = stderr.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
}

/// The doctor's smoke job on fixture GPUs: a fake `nvidia-smi` (a fixture) answers the inventory queries from the
/// real H100 capture and, inside the job, `nvidia-smi -i UUID`. The smoke job runs by the `nvidia-smi` method (no
/// torch without a GPU), so it checks the plumbing: a job through the process runner with exactly one device
/// visible, and the doctor's verdict on its answer.
@Suite("comity-agent doctor")
struct DoctorTests {
    static let h100UUID = "GPU-fb4909a4-73bc-673c-cd43-de36d4ffd1c9"

    /// A fake `nvidia-smi` answering like the captured H100 host (its query-gpu line, cut to the agent's columns).
    static func h100Fake(byUUID: String = "\(h100UUID), NVIDIA H100 80GB HBM3\n") throws -> FakeNvidiaSMI {
        let list = try String(
            contentsOf: h100FixtureDirectory.appendingPathComponent("nvidia-smi-L.txt"),
            encoding: .utf8
        )
        let wide = try String(contentsOf: h100FixtureDirectory.appendingPathComponent("query-gpu.csv"), encoding: .utf8)
        let columns = wide.split(separator: ",").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        return try FakeNvidiaSMI(answers: [
            "query": (columns[0..<4] + [columns[9]]).joined(separator: ", ") + "\n",
            "list": list,
            "by-uuid": byUUID,
            "by-uuid.sh": FakeNvidiaSMI.byUUIDScript,
            "apps": "",
            "usage": "\(h100UUID), 0, 0\n",
        ])
    }

    @Test(
        "fixture GPUs: listed, and the smoke job sees exactly the first one",
        .enabled(if: hasH100Fixture, "GPU fixtures not found at Tests/Fixtures/gpu/h100-80gb")
    )
    func fixtureGPU() async throws {
        let fake = try Self.h100Fake()
        defer { fake.remove() }
        // Only the fake's folder on PATH: no python3, so `auto` chooses the nvidia-smi smoke job.
        let doctor = Doctor(configuration: Doctor.Configuration(path: fake.directory), logger: quietLogger)
        let report = await doctor.run()
        #expect(report.gpus.devices.map(\.uuid) == [Self.h100UUID])
        #expect(report.gpus.physical.map(\.migMode) == [false])
        let smoke = try #require(report.smoke)
        #expect(smoke.method == "nvidia-smi")
        #expect(smoke.device == Self.h100UUID)
        #expect(smoke.status == .ok, "\(smoke.detail)")
        #expect(fake.calls.contains("--query-gpu=uuid,name --format=csv,noheader -i \(Self.h100UUID)"))
        #expect(report.checks.first { $0.name == "gpu_smoke" }?.status == .ok)
        #expect(report.ok, "\(report.failed): \(report.checks)")
        let json = try report.json()
        for key in ["\"ok\"", "\"checks\"", "\"gpus\"", "\"devices\"", "\"mig_mode\"", "\"runtime\"", "\"smoke\""] {
            #expect(json.contains(key), "\(key) missing in \(json)")
        }
    }

    @Test(
        "a smoke job that answers for another GPU fails the doctor, naming the check",
        .enabled(if: hasH100Fixture, "GPU fixtures not found at Tests/Fixtures/gpu/h100-80gb")
    )
    func wrongGPU() async throws {
        let fake = try Self.h100Fake(byUUID: "\(Self.h100UUID)x, NVIDIA H100 80GB HBM3\n")
        defer { fake.remove() }
        try fake.set("by-uuid.sh", "echo 'GPU-00000000-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3'\n")
        let doctor = Doctor(
            configuration: Doctor.Configuration(smoke: .nvidiaSMI, path: fake.directory),
            logger: quietLogger
        )
        let report = await doctor.run()
        #expect(!report.ok)
        #expect(report.failed == ["gpu_smoke"])
        #expect(report.smoke?.detail.contains("did not answer for that GPU") == true)
        #expect(report.text.contains("Result: FAILED (gpu_smoke)"))
    }

    @Test("a broken nvidia-smi fails the gpus check")
    func brokenTool() async throws {
        let fake = try FakeNvidiaSMI(answers: [
            "query.fail": "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
            "legacy-query.fail": "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
        ])
        defer { fake.remove() }
        let report = await Doctor(configuration: Doctor.Configuration(path: fake.directory), logger: quietLogger).run()
        #expect(report.failed == ["gpus"])
        #expect(report.checks.first { $0.name == "gpu_smoke" }?.status == .skipped)
    }

    @Test(
        "comity-agent doctor --json on this machine: zero GPUs, exit 0",
        .enabled(if: hasAgentBinary, "COMITY_BIN_DIR does not hold a built comity-agent"),
        .enabled(if: !hasNvidiaSMI, "this machine has nvidia-smi: the zero-GPU case does not apply")
    )
    func binaryWithoutGPU() async throws {
        let result = try runProgram(try #require(agentBinary), ["doctor", "--json"])
        #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(object["ok"] as? Bool == true)
        let gpus = try #require(object["gpus"] as? [String: Any])
        #expect((gpus["devices"] as? [Any])?.isEmpty == true)
        let checks = try #require(object["checks"] as? [[String: Any]])
        #expect(checks.map { $0["name"] as? String } == ["cpus", "memory", "gpus", "runner", "cgroups", "limits", "gpu_smoke"])
        #expect(checks.last?["status"] as? String == "skipped")
        #expect((object["runtime"] as? [String: Any])?["runner"] as? String == "process")
        // The limits check (a 256 MiB job under 64 MiB must be OOM-killed) passes where cgroups are usable.
        let limits = checks.first { $0["name"] as? String == "limits" }
        let hasCGroups = (object["runtime"] as? [String: Any])?["cgroups"] is String
        #expect(limits?["status"] as? String == (hasCGroups ? "ok" : "skipped"), "\(limits ?? [:])")
    }

    @Test(
        "comity-agent doctor with a fake nvidia-smi on PATH lists the fixture GPU, and `run` stays the default",
        .enabled(if: hasAgentBinary, "COMITY_BIN_DIR does not hold a built comity-agent"),
        .enabled(if: hasH100Fixture, "GPU fixtures not found at Tests/Fixtures/gpu/h100-80gb")
    )
    func binaryWithFakeGPU() async throws {
        let fake = try Self.h100Fake()
        defer { fake.remove() }
        let binary = try #require(agentBinary)
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = "\(fake.directory):/usr/bin:/bin"
        let result = try runProgram(binary, ["doctor", "--smoke", "nvidia-smi"], environment: environment)
        let text = result.stdout
        #expect(result.status == 0, "\(text) \(result.stderr)")
        #expect(text.contains("0  \(Self.h100UUID)  NVIDIA H100 80GB HBM3"))
        #expect(text.contains("Result: ok"))

        // Without a subcommand the agent runs as before: options go to `run` (which refuses a missing --state-dir).
        let run = try runProgram(binary, ["--kill-grace", "1s"])
        #expect(run.status == 64)
        #expect(run.stderr.contains("--state-dir"))
    }
}
