import ComityAPI
import ComityAgent
import ComityCore
import Foundation
import Testing

@Suite("GPU usage sampling")
struct GPUSamplerTests {
    @Test("compute-apps and usage answers parse; messages and [N/A] are tolerated")
    func parsing() throws {
        #expect(try NvidiaSMI.parseComputeApps("").isEmpty)
        #expect(try NvidiaSMI.parseComputeApps("No running processes found\n").isEmpty)
        // The capture's README: while PyTorch ran, pid 431 held 1800 MiB.
        #expect(
            try NvidiaSMI.parseComputeApps("431, GPU-fb4909a4-73bc-673c-cd43-de36d4ffd1c9, 1800\n7, GPU-x, [N/A]\n")
                == [
                NvidiaSMI.ComputeApp(
                    pid: 431,
                    gpuUuid: "GPU-fb4909a4-73bc-673c-cd43-de36d4ffd1c9",
                    usedMemoryBytes: 1800 << 20
                ),
                NvidiaSMI.ComputeApp(pid: 7, gpuUuid: "GPU-x", usedMemoryBytes: nil),
            ]
        )
        #expect(throws: NvidiaSMI.ParseError.self) { try NvidiaSMI.parseComputeApps("x, GPU-a, 10\n") }
        #expect(
            try NvidiaSMI.parseUsage("GPU-a, 37, 6800\nGPU-b, [N/A], 900\nGPU-c, 5 %, 1 MiB\n") == [
                NvidiaSMI.UsageReading(uuid: "GPU-a", utilizationPercent: 37, memoryUsedBytes: 6800 << 20),
                NvidiaSMI.UsageReading(uuid: "GPU-b", utilizationPercent: nil, memoryUsedBytes: 900 << 20),
                NvidiaSMI.UsageReading(uuid: "GPU-c", utilizationPercent: 5, memoryUsedBytes: 1 << 20),
            ]
        )
        #expect(throws: NvidiaSMI.ParseError.self) { try NvidiaSMI.parseUsage("GPU-a, 37\n") }
    }

    @Test("aggregation: per-device maxima and means, only the job's processes, MIG processes by parent")
    func aggregation() {
        var totals = GPUUsageAccumulator(devices: ["GPU-a", "MIG-b"], parents: ["MIG-b": "GPU-p"])
        #expect(totals.usage(sampleIntervalSeconds: 5) == nil)
        let job: Set<Int32> = [100, 101]
        totals.add(
            .init(
                apps: [
                    .init(pid: 100, gpuUuid: "GPU-a", usedMemoryBytes: 1000),
                    .init(pid: 101, gpuUuid: "GPU-a", usedMemoryBytes: 500),
                    .init(pid: 9, gpuUuid: "GPU-a", usedMemoryBytes: 1_000_000),
                    .init(pid: 101, gpuUuid: "GPU-p", usedMemoryBytes: 70),
                ],
                readings: [
                    .init(uuid: "GPU-a", utilizationPercent: 20, memoryUsedBytes: 2000),
                    .init(uuid: "GPU-p", utilizationPercent: nil, memoryUsedBytes: 90),
                ],
                jobProcesses: job
            )
        )
        totals.add(
            .init(
                apps: [.init(pid: 100, gpuUuid: "GPU-a", usedMemoryBytes: 1200)],
                readings: [.init(uuid: "GPU-a", utilizationPercent: 90, memoryUsedBytes: 1500)],
                jobProcesses: job
            )
        )
        totals.add(
            .init(
                apps: [],
                readings: [.init(uuid: "GPU-a", utilizationPercent: 40, memoryUsedBytes: 0)],
                jobProcesses: job
            )
        )
        #expect(
            totals.usage(sampleIntervalSeconds: 5)
                == AttemptUsage(
                    gpus: [
                        GPUUsage(
                            uuid: "GPU-a",
                            samples: 3,
                            maxMemoryBytes: 1500,
                            maxDeviceMemoryBytes: 2000,
                            meanUtilizationPercent: 50,
                            maxUtilizationPercent: 90
                        ),
                        GPUUsage(uuid: "MIG-b", samples: 3, maxMemoryBytes: 70),
                    ],
                    sampleIntervalSeconds: 5
                )
        )
        // Without a process group, every process on the job's devices counts.
        var all = GPUUsageAccumulator(devices: ["GPU-a"])
        all.add(
            .init(
                apps: [
                    .init(pid: 1, gpuUuid: "GPU-a", usedMemoryBytes: 3),
                    .init(pid: 2, gpuUuid: "GPU-a", usedMemoryBytes: 4),
                ],
                readings: [],
                jobProcesses: nil
            )
        )
        #expect(all.usage(sampleIntervalSeconds: 1)?.gpus.first?.maxMemoryBytes == 7)
    }

    @Test("the job's processes: its group and descendants that left it")
    func jobProcesses() {
        let table = [
            ProcessTable.Entry(pid: 50, state: "S", parent: 1, group: 50),
            ProcessTable.Entry(pid: 51, state: "S", parent: 50, group: 50),
            ProcessTable.Entry(pid: 60, state: "S", parent: 51, group: 60),  // setsid'd, like bubblewrap's child
            ProcessTable.Entry(pid: 61, state: "R", parent: 60, group: 60),
            ProcessTable.Entry(pid: 70, state: "S", parent: 1, group: 70),
        ]
        #expect(GPUSampler.jobProcesses(of: 50, in: table) == [50, 51, 60, 61])
    }

    @Test("intervals")
    func intervals() throws {
        #expect(try GPUSampler.parseInterval("5s") == .seconds(5))
        #expect(try GPUSampler.parseInterval("500ms") == .milliseconds(500))
        #expect(try GPUSampler.parseInterval("1m") == .seconds(60))
        for bad in ["0", "50ms", "2h", "soon", ""] {
            #expect(throws: AgentError.self) { try GPUSampler.parseInterval(bad) }
        }
    }

    /// A job through the process runner, sampled by a fake `nvidia-smi` (a fixture: it tests parsing, process
    /// matching and aggregation, not a GPU). The job writes its pid and waits until the test has seen three
    /// compute-apps queries, so at least two samples completed.
    @Test("a sampled job reports its own processes' memory and the device's utilization")
    func sampledJob() async throws {
        let fake = try FakeNvidiaSMI(answers: [
            // The job's shell holds 1800 MiB on GPU-a and 700 MiB on the MIG device's parent; pid 1 is not the job's.
            "apps.sh": """
                pid=$(cat "$here/job.pid" 2>/dev/null)
                [ -n "$pid" ] && echo "$pid, GPU-a, 1800" && echo "$pid, GPU-p, 700"
                echo "1, GPU-a, 5000"
                """,
            "usage": "GPU-a, 37, 6800\nGPU-p, [N/A], 900\n",
        ])
        defer { fake.remove() }
        let harness = try RunHarness()
        let sampler = GPUSampler(
            devices: ["GPU-a", "MIG-b"],
            inventory: [
                GPU(index: 0, uuid: "GPU-a", model: "NVIDIA H100 80GB HBM3", memoryBytes: 80 << 30),
                GPU(
                    index: 1,
                    uuid: "MIG-b",
                    model: "NVIDIA A100-SXM4-80GB MIG 1g.10gb",
                    memoryBytes: 10_000_000_000,
                    mig: "1g.10gb",
                    parentUuid: "GPU-p",
                    migMode: true
                ),
            ],
            nvidiaSMI: fake.executable,
            configuration: GPUSampler.Configuration(interval: .milliseconds(100), firstSample: .milliseconds(50)),
            logger: quietLogger
        )
        let release = "\(fake.directory)/release"
        let runner = JobRunner(configuration: JobRunner.Configuration(killGrace: .seconds(2)), logger: quietLogger)
        let job = JobRunner.Job(
            command: ["/bin/sh", "-c", "echo $$ > \"$PID_FILE\"; while [ ! -f \"$RELEASE\" ]; do sleep 0.02; done"],
            environment: ["PATH": "/usr/bin:/bin", "PID_FILE": "\(fake.directory)/job.pid", "RELEASE": release],
            workDirectory: harness.workDirectory,
            maxRuntimeSeconds: 60,
            gpuDevices: ["GPU-a", "MIG-b"]
        )
        async let outcome = sampler.sampling {
            await runner.run(job, control: harness.control, onStart: { sampler.jobStarted(processGroup: $0) }) { _ in }
        }
        // Each sample runs the fake nvidia-smi twice; under a full suite's load that can take seconds.
        let sampled = await eventually(within: .seconds(40)) {
            fake.calls.filter { $0.hasPrefix("--query-compute-apps") }.count >= 3
        }
        #expect(FileManager.default.createFile(atPath: release, contents: nil))
        #expect(await outcome == .exited(0))
        #expect(sampled, "three samples were not taken: \(fake.calls)")
        let usage = try #require(sampler.usage)
        #expect(usage.sampleIntervalSeconds == 0.1)
        #expect(usage.gpus.map(\.uuid) == ["GPU-a", "MIG-b"])
        #expect(usage.gpus.allSatisfy { $0.samples >= 2 })
        #expect(usage.gpus[0].maxMemoryBytes == 1800 << 20)
        #expect(usage.gpus[0].maxDeviceMemoryBytes == 6800 << 20)
        #expect(usage.gpus[0].meanUtilizationPercent == 37)
        #expect(usage.gpus[0].maxUtilizationPercent == 37)
        #expect(usage.gpus[1].maxMemoryBytes == 700 << 20)
        #expect(usage.gpus[1].maxDeviceMemoryBytes == nil)
        #expect(usage.gpus[1].meanUtilizationPercent == nil)
    }

    @Test("no sampling without GPUs or without nvidia-smi")
    func disabled() async throws {
        let fake = try FakeNvidiaSMI(answers: [:])
        defer { fake.remove() }
        let none = GPUSampler(devices: [], inventory: [], nvidiaSMI: fake.executable, logger: quietLogger)
        #expect(none.nvidiaSMI == nil)
        #expect(await none.sampling { 7 } == 7)
        #expect(none.usage == nil)
        let noTool = GPUSampler(devices: ["GPU-a"], inventory: [], nvidiaSMI: nil, logger: quietLogger)
        #expect(await noTool.sampling { 8 } == 8)
        #expect(noTool.usage == nil)
        #expect(fake.calls.isEmpty)
    }
}
