import ComityAPI
import ComityCore
import Foundation
import Logging
import Synchronization

/// `comity-agent doctor`: checks what this host offers without a server, as a partner does before enrolling.
///
/// It finds the CPUs, memory and GPUs (MIG devices included) the agent would offer, probes the runners
/// (``RuntimeProbe``), and, when a GPU is present, runs a smoke job through the process runner (``JobRunner``) with
/// exactly the first device visible (by UUID). With a Python that imports `torch`, the job multiplies two matrices
/// on the GPU and must see exactly one CUDA device; otherwise it runs `nvidia-smi --query-gpu=uuid,name -i UUID`,
/// which must answer for the device (for a MIG device: its parent GPU, which is what `nvidia-smi -i` knows). GPU use
/// is sampled while the smoke job runs (``GPUSampler``) and reported.
package struct Doctor: Sendable {
    package struct Configuration: Sendable {
        /// The runner the agent would be started with (`--runner`): it must be available.
        package var runner: RunnerKind = .process
        /// How the GPU smoke job runs.
        package var smoke: SmokeMode = .auto
        /// The `PATH` searched for `nvidia-smi` and `python3` and given to the smoke job; the agent's by default.
        package var path: String?
        /// How long the smoke job may run.
        package var smokeTimeoutSeconds: Int64 = 90
        /// The sampler's interval during the smoke job.
        package var sampleInterval: Duration = .milliseconds(250)

        package init(runner: RunnerKind = .process, smoke: SmokeMode = .auto, path: String? = nil) {
            self.runner = runner
            self.smoke = smoke
            self.path = path
        }
    }

    /// How the GPU smoke job runs.
    package enum SmokeMode: String, Sendable, CaseIterable {
        /// `torch` when `python3 -c "import torch"` works, `nvidia-smi` otherwise.
        case auto
        /// A CUDA matrix multiplication with PyTorch (fails when torch cannot be imported).
        case torch
        /// `nvidia-smi -i UUID` inside the job.
        case nvidiaSMI = "nvidia-smi"
        /// No smoke job.
        case none
    }

    /// A check's verdict. Only `failed` makes the doctor fail.
    package enum Status: String, Codable, Sendable {
        case ok, warning, failed, skipped
    }

    /// One line of the report.
    package struct Check: Codable, Sendable, Hashable {
        /// `cpus`, `memory`, `gpus`, `runner`, `cgroups` or `gpu_smoke`.
        package var name: String
        package var status: Status
        package var detail: String
    }

    /// The GPUs found.
    package struct GPUReport: Codable, Sendable, Hashable {
        /// The `nvidia-smi` used, or `nil` when none is on `PATH`.
        package var nvidiaSmi: String?
        /// Physical GPUs as `nvidia-smi` lists them (its indices; `mig_mode` set where reported).
        package var physical: [GPU]
        /// What the agent would offer: whole GPUs and MIG devices, numbered 0, 1, …
        package var devices: [GPU]
        package var warnings: [String]

        private enum CodingKeys: String, CodingKey { case nvidiaSmi, physical, devices, warnings }

        /// Every key, `null` included, so the JSON's keys are stable.
        package func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(nvidiaSmi, forKey: .nvidiaSmi)
            try container.encode(physical, forKey: .physical)
            try container.encode(devices, forKey: .devices)
            try container.encode(warnings, forKey: .warnings)
        }
    }

    /// The GPU smoke job.
    package struct SmokeReport: Codable, Sendable, Hashable {
        /// `torch` or `nvidia-smi`.
        package var method: String
        /// The device the job was given (its UUID, the only one visible).
        package var device: String
        package var status: Status
        package var detail: String
        /// The job's exit code, when it exited.
        package var exitCode: Int32?
        /// What the job printed (at most 8 KiB, the end kept).
        package var output: String
        /// GPU use sampled while it ran.
        package var usage: AttemptUsage?
        package var seconds: Double

        private enum CodingKeys: String, CodingKey {
            case method, device, status, detail, exitCode, output, usage, seconds
        }

        /// Every key, `null` included, so the JSON's keys are stable.
        package func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(method, forKey: .method)
            try container.encode(device, forKey: .device)
            try container.encode(status, forKey: .status)
            try container.encode(detail, forKey: .detail)
            try container.encode(exitCode, forKey: .exitCode)
            try container.encode(output, forKey: .output)
            try container.encode(usage, forKey: .usage)
            try container.encode(seconds, forKey: .seconds)
        }
    }

    /// Everything the doctor found; `--json` prints it (keys are stable, snake_case).
    package struct Report: Codable, Sendable {
        /// `true` when no check failed.
        package var ok: Bool
        /// The names of the failed checks.
        package var failed: [String]
        package var agentVersion: String
        package var checks: [Check]
        package var cpus: Int
        package var memoryBytes: Int64?
        package var gpus: GPUReport
        package var runtime: HostRuntime
        package var smoke: SmokeReport?

        private enum CodingKeys: String, CodingKey {
            case ok, failed, agentVersion, checks, cpus, memoryBytes, gpus, runtime, smoke
        }

        /// Every key, `null` included, so the JSON's keys are stable.
        package func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(ok, forKey: .ok)
            try container.encode(failed, forKey: .failed)
            try container.encode(agentVersion, forKey: .agentVersion)
            try container.encode(checks, forKey: .checks)
            try container.encode(cpus, forKey: .cpus)
            try container.encode(memoryBytes, forKey: .memoryBytes)
            try container.encode(gpus, forKey: .gpus)
            try container.encode(runtime, forKey: .runtime)
            try container.encode(smoke, forKey: .smoke)
        }
    }

    package var configuration: Configuration
    package var logger: Logger

    package init(configuration: Configuration = Configuration(), logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Runs every check.
    package func run() async -> Report {
        var checks: [Check] = []
        let cpus = Inventory.cpuCount()
        checks.append(Check(name: "cpus", status: .ok, detail: "\(cpus) CPUs this process may run on"))
        let memory = Inventory.memoryBytes()
        checks.append(
            memory.map {
                let gibibytes = Double($0) / 0x4000_0000
                return Check(name: "memory", status: .ok, detail: String(format: "%.1f GiB (MemTotal)", gibibytes))
            }
                ?? Check(name: "memory", status: .failed, detail: "cannot read MemTotal from /proc/meminfo")
        )

        let (gpus, gpuCheck) = await detectGPUs()
        checks.append(gpuCheck)

        let runtime = RuntimeProbe.detect(runner: configuration.runner)
        if runtime.available.contains(configuration.runner) {
            let available = runtime.available.map(\.rawValue).joined(separator: ", ")
            checks.append(
                Check(name: "runner", status: .ok, detail: "\(configuration.runner.rawValue) (available: \(available))")
            )
        } else {
            let reasons = runtime.notes.filter { $0.hasPrefix(configuration.runner.rawValue) }
            checks.append(
                Check(
                    name: "runner",
                    status: .failed,
                    detail: "\(configuration.runner.rawValue) is not available here"
                        + (reasons.isEmpty ? "" : ": " + reasons.joined(separator: "; "))
                )
            )
        }
        checks.append(
            runtime.cgroups.map { Check(name: "cgroups", status: .ok, detail: "cgroup \($0): limits can be enforced") }
                ?? Check(
                    name: "cgroups",
                    status: .warning,
                    detail: "no usable cgroups: CPU and memory limits are not enforced"
                )
        )

        checks.append(await runLimitsCheck(hierarchy: CGroupHierarchy.host.hierarchy))

        var smoke: SmokeReport?
        if let device = gpus.devices.first, configuration.smoke != .none {
            let report = await runSmokeJob(on: device, nvidiaSMI: gpus.nvidiaSmi)
            smoke = report
            checks.append(Check(name: "gpu_smoke", status: report.status, detail: report.detail))
        } else {
            let why = configuration.smoke == .none ? "--smoke none" : "no GPU"
            checks.append(Check(name: "gpu_smoke", status: .skipped, detail: why))
        }

        let failed = checks.filter { $0.status == .failed }.map(\.name)
        return Report(
            ok: failed.isEmpty,
            failed: failed,
            agentVersion: AgentConfiguration.version,
            checks: checks,
            cpus: cpus,
            memoryBytes: memory,
            gpus: gpus,
            runtime: runtime,
            smoke: smoke
        )
    }

    /// The `PATH` the doctor searches and gives its smoke job.
    var searchPath: String {
        configuration.path ?? ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    }

    private func detectGPUs() async -> (GPUReport, Check) {
        guard let nvidiaSMI = Inventory.findOnPath("nvidia-smi", path: searchPath) else {
            return (
                GPUReport(nvidiaSmi: nil, physical: [], devices: [], warnings: []),
                Check(name: "gpus", status: .ok, detail: "no nvidia-smi on PATH: this host offers no GPUs")
            )
        }
        do {
            let found = try await Inventory.detectGPUDevices(nvidiaSMI: nvidiaSMI, logger: logger)
            let report = GPUReport(
                nvidiaSmi: nvidiaSMI,
                physical: found.physical,
                devices: found.schedulable,
                warnings: found.warnings
            )
            let migDevices = found.schedulable.filter { $0.mig != nil }.count
            var detail = "\(found.schedulable.count) device(s) offered from \(found.physical.count) GPU(s)"
            if migDevices > 0 { detail += ", \(migDevices) of them MIG devices" }
            if !found.warnings.isEmpty { detail += "; " + found.warnings.joined(separator: "; ") }
            let status: Status =
                if found.physical.count > 0 && found.schedulable.isEmpty { .failed } else if found.warnings.isEmpty {
                    .ok
                } else {
                    .warning
                }
            return (report, Check(name: "gpus", status: status, detail: detail))
        } catch {
            return (
                GPUReport(nvidiaSmi: nvidiaSMI, physical: [], devices: [], warnings: ["\(error)"]),
                Check(name: "gpus", status: .failed, detail: "nvidia-smi failed: \(error)")
            )
        }
    }
}
