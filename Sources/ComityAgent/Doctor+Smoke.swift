import ComityAPI
import ComityCore
import Foundation
import Logging
import Synchronization

extension Doctor {
    /// The line the torch smoke job prints on success: `comity-smoke devices=1 name=NVIDIA H100 80GB HBM3`.
    static let torchMarker = "comity-smoke"

    /// The torch smoke job: matrix products on the GPU for about 2 s, so the sampler sees its memory and utilization.
    static let torchScript = """
        import time, torch
        assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
        a = torch.randn(4096, 4096, device="cuda")
        products, end = 0, time.monotonic() + 2
        while time.monotonic() < end:
            b = a @ a
            torch.cuda.synchronize()
            products += 1
        print(f"matrix products: {products}, checksum {float(b[0, 0]):.3f}", flush=True)
        print(f"\(torchMarker) devices={torch.cuda.device_count()} name={torch.cuda.get_device_name(0)}", flush=True)
        """

    /// Runs the smoke job on `device` through the process runner, with only that device visible.
    func runSmokeJob(on device: GPU, nvidiaSMI: String?) async -> SmokeReport {
        let started = ContinuousClock.now
        let python = Inventory.findOnPath("python3", path: searchPath)
        var method = configuration.smoke
        if method == .auto {
            method = await python.asyncMap { await Self.importsTorch($0) } == true ? .torch : .nvidiaSMI
        }
        // For a MIG device, `nvidia-smi -i` knows only its parent GPU.
        let queried = device.parentUuid ?? device.uuid
        let command: [String]
        switch method {
        case .torch:
            command = [python ?? "python3", "-c", Self.torchScript]
        default:
            command = [
                nvidiaSMI ?? "nvidia-smi", "--query-gpu=uuid,name", "--format=csv,noheader", "-i", queried,
            ]
        }
        var report = SmokeReport(
            method: method == .torch ? "torch" : "nvidia-smi",
            device: device.uuid,
            status: .failed,
            detail: "",
            exitCode: nil,
            output: "",
            usage: nil,
            seconds: 0
        )
        let workDirectory = FileManager.default.temporaryDirectory
            .appendingPathComponent("comity-doctor-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: workDirectory) }
        do {
            try FileManager.default.createDirectory(
                atPath: workDirectory,
                withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700]
            )
        } catch {
            report.detail = "cannot create a work folder: \(error)"
            return report
        }

        let spec = JobSpec(
            name: "doctor-smoke",
            project: "doctor",
            command: command,
            resources: ResourceRequest(cpuMillis: 1000, memoryBytes: 2 << 30, gpus: 1)
        )
        let assignment = Assignment(
            attempt: 0,
            jobId: 0,
            spec: spec,
            gpuIndices: [device.index],
            gpuUuids: [device.uuid],
            leaseExpiresAt: Date()
        )
        var inherited = ProcessInfo.processInfo.environment
        inherited["PATH"] = searchPath
        let job = JobRunner.Job(
            command: command,
            environment: JobEnvironment.build(for: assignment, workDirectory: workDirectory, inherited: inherited),
            workDirectory: workDirectory,
            maxRuntimeSeconds: configuration.smokeTimeoutSeconds,
            resources: spec.resources,
            gpuDevices: [device.uuid],
            name: spec.name
        )
        let sampler = GPUSampler(
            devices: [device.uuid],
            inventory: [device],
            nvidiaSMI: nvidiaSMI,
            configuration: GPUSampler.Configuration(
                interval: configuration.sampleInterval,
                firstSample: configuration.sampleInterval
            ),
            logger: logger
        )
        let output = Mutex("")
        var runnerConfiguration = JobRunner.Configuration(killGrace: .seconds(2))
        runnerConfiguration.logs.flushInterval = .milliseconds(50)
        let runner = JobRunner(configuration: runnerConfiguration, logger: logger)
        let outcome = await sampler.sampling {
            await runner.run(
                job,
                control: JobControl(),
                onStart: { pgid in sampler.jobStarted(processGroup: pgid) },
                sink: { chunk in
                    output.withLock { text in
                        text += chunk.data
                        if text.utf8.count > 8192 { text = String(text.suffix(8192)) }
                    }
                }
            )
        }
        report.seconds = (ContinuousClock.now - started).seconds
        report.usage = sampler.usage
        report.output = output.withLock { $0 }
        let finish = outcome.finishRequest
        report.exitCode = finish.exitCode
        guard finish.outcome == .exited, finish.exitCode == 0 else {
            let how =
                finish.outcome == .exited ? "exit \(finish.exitCode ?? -1)" : finish.message ?? finish.outcome.rawValue
            report.detail =
                "\(report.method) smoke job on \(device.uuid) failed (\(how)): \(report.output.lastLines(3))"
            return report
        }
        switch method {
        case .torch:
            guard let line = report.output.split(whereSeparator: \.isNewline).last(where: {
                $0.hasPrefix(Self.torchMarker)
            }) else {
                report.detail = "the torch smoke job printed no \"\(Self.torchMarker)\" line"
                return report
            }
            let fields = line.dropFirst(Self.torchMarker.count + 1)
            guard fields.hasPrefix("devices=1 ") else {
                report.detail = "the torch smoke job saw more than the one visible device: \(line)"
                return report
            }
            let name = fields.dropFirst("devices=1 name=".count)
            report.detail = "torch: a matrix product ran on \(name), the one device visible (\(device.uuid))"
        default:
            guard
                report.output.split(whereSeparator: \.isNewline).contains(where: {
                    $0.split(separator: ",").first.map { $0.trimming(" ") } == queried
                })
            else {
                report.detail =
                    "nvidia-smi -i \(queried) in the job did not answer for that GPU: \(report.output.lastLines(3))"
                return report
            }
            report.detail = "nvidia-smi in a job with only \(device.uuid) visible answered for \(queried)"
                + (python == nil ? " (no python3 on PATH)" : " (python3 cannot import torch)")
        }
        if let usage = report.usage?.gpus.first {
            report.detail += "; sampled \(usage.samples)x, GPU memory of the job up to "
                + Quantity.formatBytes(usage.maxMemoryBytes)
                + (usage.maxUtilizationPercent.map { ", utilization up to \($0)%" } ?? "")
        }
        report.status = .ok
        return report
    }

    /// Whether `python3 -c "import torch"` works (within 120 s: a cold import takes seconds).
    static func importsTorch(_ python: String) async -> Bool {
        do {
            _ = try await Inventory.run(python, ["-c", "import torch"], timeout: .seconds(120))
            return true
        } catch {
            return false
        }
    }
}

extension Optional {
    /// `map` for an async transform.
    fileprivate func asyncMap<T>(_ transform: (Wrapped) async -> T) async -> T? {
        guard let self else { return nil }
        return await transform(self)
    }
}

extension Duration {
    /// The duration in seconds.
    fileprivate var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

extension String {
    /// The last `count` non-empty lines, joined by ` / `.
    fileprivate func lastLines(_ count: Int) -> String {
        split(whereSeparator: \.isNewline).suffix(count).joined(separator: " / ")
    }
}
