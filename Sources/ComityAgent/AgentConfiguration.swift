import ComityCore
import Foundation

/// Everything `comity-agent` is started with, validated before anything runs.
package struct AgentConfiguration: Sendable, CustomStringConvertible {
    /// The agent's version, sent at enrollment.
    package static let version = "0.1.0"

    /// Base URL of the server; `nil` to use the one saved with the credential.
    package var server: String?
    /// One-time join token; needed only when the state folder holds no credential yet.
    package var joinToken: String?
    package var stateDirectory: StateDirectory
    /// A `--resources` file replacing detection.
    package var resourcesFile: String?
    /// The host's name at enrollment; the hostname by default.
    package var name: String?
    package var labels: [String: String]
    /// Time between `SIGTERM` and `SIGKILL` when a job is stopped.
    package var killGrace: Duration
    /// How long one long-poll for assignments may be held by the server.
    package var pollWaitSeconds: Int
    /// The runner every job goes through (`--runner`).
    package var runner: RunnerKind
    /// The host name or address at which others reach this host's services (`--advertise-address`): the host part
    /// of every service replica's URL. `127.0.0.1` by default, which only this host can reach.
    package var advertiseAddress: String
    /// Time between two samples of a GPU job's memory and utilization (`--gpu-sample-interval`; ``GPUSampler``).
    package var gpuSampleInterval: Duration
    /// The Slurm partition jobs are submitted to (`--slurm-partition`); required by the slurm runner.
    package var slurmPartition: String?
    /// The `slurm.conf` Slurm's commands use (`--slurm-conf`, set as `SLURM_CONF`); Slurm's default when `nil`.
    package var slurmConf: String?

    package init(
        server: String?,
        joinToken: String?,
        stateDirectory: String,
        resourcesFile: String? = nil,
        name: String? = nil,
        labels: [String: String] = [:],
        killGrace: Duration = .seconds(10),
        pollWaitSeconds: Int = 20,
        runner: RunnerKind = .process,
        advertiseAddress: String = "127.0.0.1",
        gpuSampleInterval: Duration = .seconds(5),
        slurmPartition: String? = nil,
        slurmConf: String? = nil
    ) {
        self.server = server
        self.joinToken = joinToken
        self.stateDirectory = StateDirectory(path: stateDirectory)
        self.resourcesFile = resourcesFile
        self.name = name
        self.labels = labels
        self.killGrace = killGrace
        self.pollWaitSeconds = pollWaitSeconds
        self.runner = runner
        self.advertiseAddress = advertiseAddress
        self.gpuSampleInterval = gpuSampleInterval
        self.slurmPartition = slurmPartition
        self.slurmConf = slurmConf
    }

    /// Redacts the join token.
    package var description: String {
        "AgentConfiguration(server: \(server ?? "(from credential)"), "
            + "joinToken: \(joinToken == nil ? "nil" : "<redacted>"), stateDirectory: \(stateDirectory.path), "
            + "resourcesFile: \(resourcesFile ?? "nil"), name: \(name ?? "(hostname)"), labels: \(labels), "
            + "killGrace: \(killGrace), runner: \(runner.rawValue), advertiseAddress: \(advertiseAddress))"
    }

    /// Parses `--labels k=v,k2=v2`.
    ///
    /// - Throws: ``AgentError`` naming the bad pair.
    package static func parseLabels(_ text: String) throws(AgentError) -> [String: String] {
        var labels: [String: String] = [:]
        for pair in text.split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = parts[0].trimming(" ")
            guard parts.count == 2, isLabelKey(key) else {
                throw AgentError(
                    .configuration,
                    "--labels: expected key=value pairs separated by commas "
                        + "(keys of letters, digits, '-', '_', '.', '/'), got \"\(pair)\""
                )
            }
            guard labels[key] == nil else { throw AgentError(.configuration, "--labels: \"\(key)\" is given twice") }
            labels[key] = parts[1].trimming(" ")
        }
        return labels
    }

    /// Parses `--kill-grace`: `10s`, `1m`, `500ms` or a number of seconds (`0` for no grace).
    package static func parseGrace(_ text: String) throws(AgentError) -> Duration {
        let trimmed = text.trimming(" ")
        if trimmed.hasSuffix("ms"), let millis = Int64(trimmed.dropLast(2)), millis >= 0 {
            return .milliseconds(millis)
        }
        if trimmed == "0" || trimmed == "0s" { return .zero }
        if let seconds = Quantity.seconds(trimmed), seconds <= 3_600 { return .seconds(seconds) }
        throw AgentError(
            .configuration,
            "--kill-grace: expected a duration such as 10s, 1m or 500ms (at most 1h), got \"\(text)\""
        )
    }

    /// Checks the server URL and that the state folder is usable.
    package func validate() throws(AgentError) {
        if let server {
            guard let url = URL(string: server), let scheme = url.scheme, ["http", "https"].contains(scheme),
                url.host != nil
            else {
                throw AgentError(
                    .configuration,
                    "--server: expected a URL such as http://127.0.0.1:8700, got \"\(server)\""
                )
            }
        }
        if stateDirectory.path.isEmpty { throw AgentError(.configuration, "--state-dir: expected a folder") }
        if !Self.isAdvertiseAddress(advertiseAddress) {
            throw AgentError(
                .configuration,
                "--advertise-address: expected a host name or an IP address that others reach this host at "
                    + "(e.g. 10.0.0.5, gpu1.example.org or fd00::5), got \"\(advertiseAddress)\""
            )
        }
        if let name, !name.isEmpty, !Self.isHostName(name) {
            throw AgentError(
                .configuration,
                "--name: expected letters, digits, '-', '_' or '.' (at most 128), got \"\(name)\""
            )
        }
        try validateSlurm()
    }

    static func isLabelKey(_ key: String) -> Bool {
        !key.isEmpty && key.count <= 128
            && key.unicodeScalars.allSatisfy {
                ("0"..."9").contains($0) || ("a"..."z").contains($0) || ("A"..."Z").contains($0)
                    || "-_./".unicodeScalars.contains($0)
            }
    }

    /// A DNS name or an IPv4/IPv6 address (letters, digits, `-`, `.`, `:`; IPv6 possibly in brackets).
    static func isAdvertiseAddress(_ address: String) -> Bool {
        var text = Substring(address)
        if text.hasPrefix("["), text.hasSuffix("]") { text = text.dropFirst().dropLast() }
        return !text.isEmpty && text.count <= 253 && !text.hasPrefix("-") && !text.hasPrefix(".")
            && text.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0)
                    || "-.:".unicodeScalars.contains($0)
            }
    }

    static func isHostName(_ name: String) -> Bool {
        name.count <= 128
            && name.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0)
                    || "-_.".unicodeScalars.contains($0)
            }
    }
}
