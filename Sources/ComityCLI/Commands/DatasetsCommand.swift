import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore
import Foundation

/// `comity datasets add|show|list`.
struct DatasetsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "datasets",
        abstract: "Register datasets and models with their residency and use conditions, and list them.",
        subcommands: [List.self, Show.self, Add.self],
        defaultSubcommand: List.self
    )

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Register a dataset (or a new version of one) as its steward.",
            discussion: """
                Either --file with a dataset document, or the name and options. Example: comity datasets add ke-health \
                --steward uon --class health --allow KE --purpose health-research --non-commercial
                """
        )

        @Argument(help: ArgumentHelp("The dataset's name.", valueName: "name"))
        var name: String?

        @Option(help: ArgumentHelp("A dataset document (YAML) instead of the options.", valueName: "file"))
        var file: String?

        @Option(help: ArgumentHelp("The steward partner (yours).", valueName: "partner"))
        var steward: String?

        @Option(name: .customLong("class"), help: ArgumentHelp("public, internal, personal, sensitive, health, genomic or indigenous.", valueName: "class"))
        var dataClass: String?

        @Option(help: ArgumentHelp("A jurisdiction or set where it may be processed (repeat; none means anywhere).", valueName: "code"))
        var allow: [String] = []

        @Option(help: ArgumentHelp("A jurisdiction or set where it may not be processed (repeat).", valueName: "code"))
        var deny: [String] = []

        @Option(name: .customLong("host-label"), help: ArgumentHelp("A label hosts must carry, e.g. tre=true (repeat).", valueName: "key=value"))
        var hostLabels: [String] = []

        @Option(help: ArgumentHelp("A purpose projects must have, e.g. health-research (repeat).", valueName: "purpose"))
        var purpose: [String] = []

        @Flag(name: .customLong("non-commercial"), help: "Refuse commercial projects and partners.")
        var nonCommercial = false

        @Option(name: .customLong("use-partner"), help: ArgumentHelp("Only projects of this partner may use it (repeat).", valueName: "partner"))
        var usePartners: [String] = []

        @Option(name: .customLong("export-class"), help: ArgumentHelp("The federation's export class of these weights.", valueName: "class"))
        var exportClass: String?

        @Option(help: ArgumentHelp("Why (kept with the version).", valueName: "text"))
        var reason: String?

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func validate() throws {
            if file == nil, name == nil || steward == nil { throw ValidationError("give --file, or a name and --steward") }
            for label in hostLabels where !label.contains("=") { throw ValidationError("--host-label: expected key=value, got \"\(label)\"") }
        }

        func document() throws -> (JSONValue, String?) {
            if let file { return try PolicyCommand.load(file) }
            var object: [String: JSONValue] = ["kind": .string("dataset"), "name": .string(name!), "steward": .string(steward!)]
            if let dataClass { object["class"] = .string(dataClass) }
            if let exportClass { object["export_class"] = .string(exportClass) }
            if let reason { object["reason"] = .string(reason) }
            var residency: [String: JSONValue] = [:]
            if !allow.isEmpty { residency["allow"] = .array(allow.map(JSONValue.string)) }
            if !deny.isEmpty { residency["deny"] = .array(deny.map(JSONValue.string)) }
            if !hostLabels.isEmpty {
                residency["host_labels"] = .object(Dictionary(uniqueKeysWithValues: hostLabels.map { label in
                    let parts = label.split(separator: "=", maxSplits: 1).map(String.init)
                    return (parts[0], JSONValue.string(parts.count > 1 ? parts[1] : ""))
                }))
            }
            if !residency.isEmpty { object["residency"] = .object(residency) }
            var use: [String: JSONValue] = [:]
            if !purpose.isEmpty { use["purposes"] = .array(purpose.map(JSONValue.string)) }
            if nonCommercial { use["non_commercial"] = .bool(true) }
            if !usePartners.isEmpty { use["partners"] = .array(usePartners.map(JSONValue.string)) }
            if !use.isEmpty { object["use"] = .object(use) }
            return (.object(object), nil)
        }

        func run() async throws {
            let (document, source) = try document()
            let result = try await global.client().applyPolicy(PolicyApplyRequest(document: document, source: source))
            if global.isJSON { return try Terminal.json(result) }
            PolicyCommand.print(result)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List datasets and models.")

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let datasets = try await global.client().datasets()
            if global.isJSON { return try Terminal.json(DatasetList(datasets: datasets)) }
            var table = Table("NAME", "VERSION", "STEWARD", "CLASS", "RESIDENCY", "DERIVED FROM")
            for dataset in datasets {
                table.append(
                    dataset.name, "v\(dataset.version)", dataset.steward, dataset.dataClass.rawValue + (dataset.exportClass.map { " [\($0)]" } ?? ""),
                    dataset.residency, dataset.derivedFrom.joined(separator: ", "))
            }
            table.print(empty: "no datasets")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one dataset's rules.")

        @Argument(help: ArgumentHelp("The dataset's name.", valueName: "name"))
        var name: String

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let dataset = try await global.client().dataset(name)
            if global.isJSON { return try Terminal.json(dataset) }
            Terminal.out("\(dataset.name) v\(dataset.version): steward \(dataset.steward), class \(dataset.dataClass.rawValue)")
            Terminal.out("residency: \(dataset.residency)")
            if let job = dataset.producedByJob { Terminal.out("produced by job \(job) from \(dataset.derivedFrom.joined(separator: ", "))") }
            for line in PolicyCommand.flatten(dataset.document) { Terminal.out("  " + line) }
        }
    }
}
