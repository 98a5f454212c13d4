import ComityAPI
import ComityCore

/// The environment a job's process starts with.
package enum JobEnvironment {
    /// Variables passed through from the agent's own environment; nothing else of it reaches a job.
    package static let inheritedNames = ["PATH", "HOME", "LANG"]

    /// Builds the environment of one attempt.
    ///
    /// Order of precedence, lowest first: the inherited `PATH`, `HOME`, `LANG`; the job's `env`; the agent's own
    /// variables (`COMITY_JOB_ID`, `COMITY_ATTEMPT_ID`, `COMITY_WORK_DIR`) and GPU visibility, which a job cannot
    /// override. `CUDA_VISIBLE_DEVICES` and `NVIDIA_VISIBLE_DEVICES` list exactly the assigned GPUs (UUIDs, or
    /// indices when the server sent no UUIDs) and are empty for a job without GPUs, so it sees none.
    /// `CUDA_DEVICE_ORDER=PCI_BUS_ID` makes CUDA's numbering match `nvidia-smi`'s indices.
    ///
    /// - Parameters:
    ///   - assignment: the attempt to run.
    ///   - workDirectory: the attempt's work folder.
    ///   - inherited: the agent's environment (`ProcessInfo.processInfo.environment`).
    package static func build(
        for assignment: Assignment,
        workDirectory: String,
        inherited: [String: String]
    ) -> [String: String] {
        var environment: [String: String] = [:]
        for name in inheritedNames {
            if let value = inherited[name] { environment[name] = value }
        }
        environment.merge(assignment.spec.env) { _, job in job }
        environment["COMITY_JOB_ID"] = String(assignment.jobId)
        environment["COMITY_ATTEMPT_ID"] = String(assignment.attempt)
        environment["COMITY_WORK_DIR"] = workDirectory
        let devices = visibleDevices(for: assignment)
        environment["CUDA_VISIBLE_DEVICES"] = devices
        environment["NVIDIA_VISIBLE_DEVICES"] = devices
        environment["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        return environment
    }

    /// The assigned GPUs as a device list: UUIDs joined by `,`, or the indices when there are no UUIDs, or `""`.
    package static func visibleDevices(for assignment: Assignment) -> String {
        let uuids = assignment.gpuUuids.filter { !$0.isEmpty }
        if !uuids.isEmpty, uuids.count == assignment.gpuUuids.count { return uuids.joined(separator: ",") }
        return assignment.gpuIndices.map(String.init).joined(separator: ",")
    }
}
