import ComityAPI
import ComityAgent
import ComityCore
import Foundation
import Logging
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs jobs through a container runner and keeps what they printed.
private final class ContainerRun: Sendable {
    let chunks = Mutex<[LogAppend]>([])
    let workDirectory: String
    let attempt = Int64.random(in: 1_000_000_000...9_999_999_999)

    init() throws { workDirectory = try makeTemporaryDirectory() }

    deinit { try? FileManager.default.removeItem(atPath: workDirectory) }

    func job(_ command: [String], image: String?, memory: Int64 = 256 << 20) -> JobRunner.Job {
        JobRunner.Job(
            command: command,
            environment: ["PATH": "/usr/local/bin:/usr/bin:/bin", "COMITY_ATTEMPT_ID": String(attempt)],
            workDirectory: workDirectory,
            maxRuntimeSeconds: 60,
            resources: ResourceRequest(cpuMillis: 500, memoryBytes: memory),
            attempt: attempt,
            network: false,
            image: image
        )
    }

    func run(_ job: JobRunner.Job, podman: String) async -> JobRunner.Outcome {
        let runner = ContainerRunner(
            configuration: ContainerRunner.Configuration(podman: podman, killGrace: .seconds(2)),
            process: JobRunner(configuration: JobRunner.Configuration(killGrace: .seconds(2)), logger: quietLogger),
            logger: quietLogger
        )
        return await runner.run(job, control: JobControl(), onStart: { _ in }) { chunk in
            self.chunks.withLock { $0.append(chunk) }
        }
    }

    func output(_ stream: LogStream) -> String {
        chunks.withLock { $0.filter { $0.stream == stream }.map(\.data).joined() }
    }
}

@Suite("Container runner")
struct ContainerRunnerTests {
    @Test("podman run gets the job's limits, its work folder, no network, its variables by name, its GPUs")
    func arguments() throws {
        var job = JobRunner.Job(
            command: ["python3", "train.py"],
            environment: ["PATH": "/usr/bin", "HOME": "/root", "COMITY_JOB_ID": "7", "SECRET": "s3"],
            workDirectory: "/var/lib/comity/work/42",
            maxRuntimeSeconds: nil,
            resources: ResourceRequest(cpuMillis: 1500, memoryBytes: 64 << 20),
            gpuDevices: ["GPU-a", "GPU-b"],
            attempt: 42,
            network: false,
            image: "python:3.12"
        )
        let arguments = ContainerRunner.runArguments(for: job, image: "python:3.12", name: "comity-42", pidsLimit: 4096)
        #expect(
            arguments == [
                "run", "--name", "comity-42", "--sig-proxy=true",
                "--memory", "67108864b", "--memory-swap", "67108864b", "--cpus", "1.5", "--pids-limit", "4096",
                "--volume", "/var/lib/comity/work/42:/var/lib/comity/work/42", "--workdir", "/var/lib/comity/work/42",
                "--network", "none", "--env", "COMITY_JOB_ID", "--env", "SECRET",
                "--device", "nvidia.com/gpu=GPU-a", "--device", "nvidia.com/gpu=GPU-b",
                "python:3.12", "python3", "train.py",
            ]
        )
        #expect(!arguments.contains("s3"), "values come from podman's environment, not its command line")
        job.network = true
        let withNetwork = ContainerRunner.runArguments(for: job, image: "python:3.12", name: "comity-42", pidsLimit: 10)
        #expect(withNetwork.contains("host"))
    }

    @Test("a job without an image runs as a process")
    func noImage() async throws {
        let run = try ContainerRun()
        let outcome = await run.run(run.job(["sh", "-c", "echo plain"], image: nil), podman: "/nonexistent/podman")
        #expect(outcome == .exited(0))
        #expect(run.output(.stdout) == "plain\n")
    }

    @Test("image: is parsed and checked in job files")
    func imageField() throws {
        let base: [String: JSONValue] = ["name": .string("t"), "project": .string("p"), "command": .string("true")]
        var document = base
        document["image"] = .string("ghcr.io/org/train:v1")
        #expect(try JobSpec.validate(.object(document)).get().image == "ghcr.io/org/train:v1")
        #expect(try JobSpec.validate(.object(base)).get().image == nil)
        document["image"] = .string("python 3")
        guard case .failure(let failure) = JobSpec.validate(.object(document)) else {
            Issue.record("an image reference with a space was accepted")
            return
        }
        #expect(failure.errors.map(\.field) == ["image"])
    }

    @Test("the inventory notes a host without podman")
    func inventoryNote() {
        var runtime = HostRuntime(runner: .container, available: [.process])
        RuntimeProbe.addContainer(.unavailable("container: podman not found"), to: &runtime)
        #expect(runtime.notes == ["container: podman not found"])
        #expect(!runtime.available.contains(.container))
        RuntimeProbe.addContainer(.works(podman: "/usr/bin/podman"), to: &runtime)
        #expect(runtime.available.contains(.container))
    }

    @Test("with a working podman: a job in a tiny imported image prints, exits, and its container is removed")
    func realPodman() async throws {
        guard case .works(let podman) = ContainerRunner.probe() else {
            try Test.cancel("podman not found or not working here")
        }
        let image = try Self.importTestImage(podman: podman)
        // A container that cannot start here is a skip, with podman's own words.
        let smoke = ContainerRunner.runSync(
            [podman, "run", "--rm", "--network", "none", image, "/bin/sh", "-c", ":"],
            timeout: .seconds(60)
        )
        guard smoke.status == 0 else {
            try Test.cancel(Comment(rawValue: "podman cannot run containers here: \(smoke.output)"))
        }
        let run = try ContainerRun()
        let outcome = await run.run(
            run.job(["/bin/sh", "-c", "echo in-container $COMITY_ATTEMPT_ID; pwd"], image: image),
            podman: podman
        )
        #expect(outcome == .exited(0), "\(run.output(.stderr))")
        #expect(run.output(.stdout) == "in-container \(run.attempt)\n\(run.workDirectory)\n")
        let left = ContainerRunner.runSync(
            [podman, "container", "exists", "comity-\(run.attempt)"],
            timeout: .seconds(30)
        )
        #expect(left.status == 1, "the container is removed: \(left.output)")
    }

    /// Imports a rootfs of the host's `sh`, `cat` and `sleep` with their libraries as `localhost/comity-test:tiny`.
    static func importTestImage(podman: String) throws -> String {
        let image = "localhost/comity-test:tiny"
        let root = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let manager = FileManager.default
        var files = ["/bin/sh", "/bin/cat", "/bin/sleep"]
        for program in files {
            let listed = ContainerRunner.runSync(["/usr/bin/ldd", program], timeout: .seconds(10)).output
            for word in listed.split(whereSeparator: \.isWhitespace) where word.hasPrefix("/") {
                files.append(String(word))
            }
        }
        for file in Set(files) {
            let resolved = URL(fileURLWithPath: file).resolvingSymlinksInPath().path
            let target = root + file
            try manager.createDirectory(
                atPath: (target as NSString).deletingLastPathComponent,
                withIntermediateDirectories: true
            )
            try? manager.removeItem(atPath: target)
            try manager.copyItem(atPath: resolved, toPath: target)
        }
        for folder in ["tmp", "proc", "sys", "dev", "etc"] {
            try manager.createDirectory(atPath: root + "/" + folder, withIntermediateDirectories: true)
        }
        let tarball = root + ".tar"
        defer { unlink(tarball) }
        let packed = ContainerRunner.runSync(["/bin/tar", "-C", root, "-cf", tarball, "."], timeout: .seconds(30))
        try #require(packed.status == 0, "tar: \(packed.output)")
        let imported = ContainerRunner.runSync([podman, "import", tarball, image], timeout: .seconds(60))
        try #require(imported.status == 0, "podman import: \(imported.output)")
        return image
    }
}
