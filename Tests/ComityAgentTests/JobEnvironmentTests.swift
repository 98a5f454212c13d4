import ComityAPI
import ComityAgent
import ComityCore
import Foundation
import Testing

@Suite("Job environment")
struct JobEnvironmentTests {
    static func assignment(gpuIndices: [Int] = [], gpuUuids: [String] = [], env: [String: String] = [:]) -> Assignment {
        let spec = JobSpec(
            name: "train",
            project: "swahili-asr",
            command: ["python3", "train.py"],
            env: env,
            resources: ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30, gpus: gpuIndices.count)
        )
        return Assignment(
            attempt: 42,
            jobId: 7,
            spec: spec,
            gpuIndices: gpuIndices,
            gpuUuids: gpuUuids,
            leaseExpiresAt: Date()
        )
    }

    let inherited = [
        "PATH": "/usr/bin:/bin", "HOME": "/home/agent", "LANG": "C.UTF-8", "AWS_SECRET_ACCESS_KEY": "x",
        "COMITY_TOKEN": "y",
    ]

    @Test("GPUs by UUID")
    func uuids() {
        let environment = JobEnvironment.build(
            for: Self.assignment(gpuIndices: [1, 3], gpuUuids: ["GPU-b", "GPU-d"]),
            workDirectory: "/state/work/42",
            inherited: inherited
        )
        #expect(environment["CUDA_VISIBLE_DEVICES"] == "GPU-b,GPU-d")
        #expect(environment["NVIDIA_VISIBLE_DEVICES"] == "GPU-b,GPU-d")
        #expect(environment["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID")
    }

    @Test("GPUs by index when the server sent no UUIDs")
    func indices() {
        let environment = JobEnvironment.build(
            for: Self.assignment(gpuIndices: [0, 2]),
            workDirectory: "/w",
            inherited: inherited
        )
        #expect(environment["CUDA_VISIBLE_DEVICES"] == "0,2")
        #expect(environment["NVIDIA_VISIBLE_DEVICES"] == "0,2")
        // A resources file may leave some UUIDs empty: indices are then the only exact answer.
        #expect(
            JobEnvironment.visibleDevices(for: Self.assignment(gpuIndices: [0, 1], gpuUuids: ["GPU-a", ""])) == "0,1"
        )
    }

    @Test("a job without GPUs sees none")
    func noGPUs() {
        let environment = JobEnvironment.build(for: Self.assignment(), workDirectory: "/w", inherited: inherited)
        #expect(environment["CUDA_VISIBLE_DEVICES"] == "")
        #expect(environment["NVIDIA_VISIBLE_DEVICES"] == "")
    }

    @Test("only PATH, HOME and LANG are inherited; the job's env comes next; the agent's variables win")
    func precedence() {
        let assignment = Self.assignment(
            gpuIndices: [1],
            gpuUuids: ["GPU-b"],
            env: ["HF_HOME": "/scratch/hf", "LANG": "sw_KE.UTF-8", "CUDA_VISIBLE_DEVICES": "0,1,2,3"]
        )
        let environment = JobEnvironment.build(for: assignment, workDirectory: "/state/work/42", inherited: inherited)
        #expect(
            environment == [
                "PATH": "/usr/bin:/bin", "HOME": "/home/agent", "LANG": "sw_KE.UTF-8", "HF_HOME": "/scratch/hf",
                "COMITY_JOB_ID": "7", "COMITY_ATTEMPT_ID": "42", "COMITY_WORK_DIR": "/state/work/42",
                "CUDA_VISIBLE_DEVICES": "GPU-b", "NVIDIA_VISIBLE_DEVICES": "GPU-b", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            ]
        )
    }
}
