import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore
import Foundation

/// `comity why JOB`: why a job waits, or why it runs where it runs.
struct WhyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "why",
        abstract: "Explain a job's placement: every host with all its failing rules, and the nearest way out.",
        discussion: "Reason codes are stable (docs/sovereignty.md lists them); --output json gives the same codes."
    )

    @Argument(help: ArgumentHelp("The job id.", valueName: "job"))
    var job: Int64

    @Flag(help: "List every host, also the eligible ones.")
    var all = false

    @OptionGroup(title: "Global Options")
    var global: GlobalOptions

    func run() async throws {
        let explanation = try await global.client().why(job)
        if global.isJSON { return try Terminal.json(explanation) }
        ExplanationPrinter.print(explanation, all: all)
    }
}

/// `comity explain FILE`: what-if for a job file.
struct ExplainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "Evaluate a job file against the rules and the pool without submitting it."
    )

    @Argument(help: ArgumentHelp("The job file (YAML or JSON; - for standard input).", valueName: "file"))
    var file: String

    @Flag(help: "List every host, also the eligible ones.")
    var all = false

    @OptionGroup(title: "Global Options")
    var global: GlobalOptions

    func run() async throws {
        let explanation = try await global.client().explain(try JobFile.load(file))
        if global.isJSON { return try Terminal.json(explanation) }
        ExplanationPrinter.print(explanation, all: all)
    }
}

enum ExplanationPrinter {
    static func print(_ explanation: Explanation, all: Bool) {
        let subject = explanation.job.map { "job \($0)" } ?? "job file"
        Terminal.out("\(subject): \(explanation.outcome.rawValue) — \(explanation.summary)")
        Terminal.out("rules in force: \(explanation.policyVersion); data may reach: \(explanation.permittedJurisdictions.map { $0.isEmpty ? "nowhere" : $0.joined(separator: ", ") } ?? "anywhere")")
        if let sharing = explanation.sharing { Terminal.out("sharing: \(sharing)") }
        if let host = explanation.placedOn {
            Terminal.out("placed on \(host) under rules \(explanation.placedUnder ?? "?"): \(explanation.ranking ?? "")")
            if let verdict = explanation.hosts.first(where: { $0.host == host }) {
                for reason in verdict.admittedBy { Terminal.out("  admitted: \(reason.label)\(reason.rule.map { " [\($0)]" } ?? ""): \(reason.detail)") }
            }
        }
        if !explanation.jobReasons.isEmpty {
            Terminal.out("job reasons (every host):")
            for reason in explanation.jobReasons { Terminal.out("  \(line(reason))") }
        }
        let shown = explanation.hosts.filter { all || !$0.eligible || !$0.reasons.isEmpty }
        if !shown.isEmpty {
            Terminal.out("hosts:")
            for host in shown {
                let state = host.eligible ? (host.reasons.isEmpty ? "eligible" : "eligible, busy") : "excluded"
                Terminal.out("  \(host.host) (\(host.partner), \(host.region), \(host.jurisdiction)): \(state)")
                for reason in host.reasons { Terminal.out("    \(line(reason))") }
            }
        }
        for way in explanation.waysOut { Terminal.out("way out: \(way)") }
    }

    static func line(_ reason: Reason) -> String {
        "\(reason.label)\(reason.rule.map { " [\($0)]" } ?? ""): \(reason.detail)"
    }
}
