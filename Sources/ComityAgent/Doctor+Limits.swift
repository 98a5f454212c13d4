import ComityCore
import Foundation
import Logging

extension Doctor {
    /// Proves that memory limits hold: a job asking for 64 MiB that allocates 256 MiB runs through the process runner
    /// in its own cgroup and must end OOM-killed. Skipped without cgroups or without `python3` (the allocator).
    func runLimitsCheck(hierarchy: CGroupHierarchy?) async -> Check {
        guard let hierarchy else {
            return Check(name: "limits", status: .skipped, detail: "no usable cgroups")
        }
        guard let python = Inventory.findOnPath("python3", path: searchPath) else {
            return Check(name: "limits", status: .skipped, detail: "no python3 to allocate memory with")
        }
        let workDirectory = FileManager.default.temporaryDirectory
            .appendingPathComponent("comity-doctor-limits-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: workDirectory) }
        do {
            try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
        } catch {
            return Check(name: "limits", status: .failed, detail: "cannot create a work folder: \(error)")
        }
        let limit: Int64 = 64 << 20
        let job = JobRunner.Job(
            command: [python, "-c", "x = bytearray(256 << 20); print(len(x))"],
            environment: ["PATH": searchPath],
            workDirectory: workDirectory,
            maxRuntimeSeconds: 60,
            resources: ResourceRequest(cpuMillis: 1000, memoryBytes: limit),
            name: "doctor-limits"
        )
        var runnerConfiguration = JobRunner.Configuration(killGrace: .seconds(2))
        runnerConfiguration.cgroups = hierarchy
        let outcome = await JobRunner(configuration: runnerConfiguration, logger: logger)
            .run(job, control: JobControl(), sink: { _ in })
        if case .oomKilled(let message) = outcome {
            return Check(
                name: "limits",
                status: .ok,
                detail: "a job allocating 256 MiB under a 64 MiB limit was OOM-killed in cgroup \(hierarchy.summary): "
                    + message
            )
        }
        return Check(
            name: "limits",
            status: .failed,
            detail: "a job allocating 256 MiB under a 64 MiB limit was not OOM-killed (\(outcome)): limits do not hold"
        )
    }
}
