import ComityAPI
import ComityCore
import Foundation

extension Doctor.Report {
    /// The report as one JSON object: snake_case keys, sorted, indented.
    package func json() throws -> String {
        let encoder = WireJSON.encoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// The report for people: one line per check, the GPUs, the runtime's notes, and the verdict.
    package var text: String {
        var lines = ["comity-agent doctor (agent \(agentVersion))"]
        let width = checks.map(\.name.count).max() ?? 0
        for check in checks {
            let status = check.status.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)
            let name = check.name.padding(toLength: width + 2, withPad: " ", startingAt: 0)
            lines.append("  \(status) \(name)\(check.detail)")
        }
        if !gpus.devices.isEmpty {
            lines.append("")
            lines.append("GPU devices offered (nvidia-smi: \(gpus.nvidiaSmi ?? "-")):")
            for gpu in gpus.devices {
                let memory = String(format: "%.1f GiB", Double(gpu.memoryBytes) / 0x4000_0000)
                var line = "  \(gpu.index)  \(gpu.uuid)  \(gpu.model)  \(memory)"
                if let parent = gpu.parentUuid { line += "  (MIG device of \(parent))" }
                lines.append(line)
            }
        }
        if gpus.physical.contains(where: { $0.migMode != nil }) {
            let modes = gpus.physical.map { "GPU \($0.index) \($0.migMode == true ? "on" : "off")" }
            lines.append("MIG mode: " + modes.joined(separator: ", "))
        }
        lines.append("")
        lines.append(
            "Runtime: runner \(runtime.runner.rawValue); available: "
                + runtime.available.map(\.rawValue).joined(separator: ", ") + "; cgroups: \(runtime.cgroups ?? "none")"
        )
        for note in runtime.notes { lines.append("  - \(note)") }
        if let smoke, !smoke.output.isEmpty {
            lines.append("")
            lines.append("GPU smoke job (\(smoke.method), \(String(format: "%.1f", smoke.seconds)) s) printed:")
            for line in smoke.output.split(whereSeparator: \.isNewline).suffix(10) { lines.append("  | \(line)") }
        }
        lines.append("")
        lines.append(ok ? "Result: ok" : "Result: FAILED (\(failed.joined(separator: ", ")))")
        return lines.joined(separator: "\n")
    }
}
