import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore
import Foundation

/// `comity usage [--partner P] [--since T] [--by partner|project|host|region] [--format table|csv|json]`.
struct UsageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usage",
        abstract: "GPU-hours, CPU-hours and GiB-hours used by jobs and contributed by hosts, grouped.",
        discussion: """
            Hours are exact (not decayed); GPU-hours are weighted by GPU model. Used hours are counted by the jobs' \
            partner, project, host or region; contributed hours by the hosts' (projects contribute none). Partner \
            admins see their partner's jobs and hosts, researchers their project's jobs.
            """
    )

    enum Format: String, CaseIterable, ExpressibleByArgument {
        case table
        case csv
        case json
    }

    @Option(help: ArgumentHelp("Only this partner's jobs and hosts.", valueName: "name"))
    var partner: String?

    @Option(help: ArgumentHelp("From this time: a duration back from now (7d, 12h) or an ISO 8601 time or date; default 30d.", valueName: "time"))
    var since: String?

    @Option(help: ArgumentHelp("Group by partner, project, host or region.", valueName: "grouping"))
    var by: UsageReport.Grouping = .partner

    @Option(help: ArgumentHelp("table, csv (with a header row) or json; default: --output.", valueName: "format"))
    var format: Format?

    @OptionGroup(title: "Global Options")
    var global: GlobalOptions

    func validate() throws {
        guard let since else { return }
        let fractional = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        let valid =
            Quantity.seconds(since) != nil || (try? Date(since, strategy: .iso8601)) != nil || (try? fractional.parse(since)) != nil
            || (try? Date(since + "T00:00:00Z", strategy: .iso8601)) != nil
        guard valid else {
            throw ValidationError(
                "--since: expected a duration back from now such as 7d or 12h, or an ISO 8601 time such as 2026-11-27T10:00:00Z "
                    + "or date 2026-11-27, got \"\(since)\"")
        }
    }

    func run() async throws {
        let report = try await global.client().usage(by: by, partner: partner, since: since)
        switch format ?? (global.isJSON ? .json : .table) {
        case .json:
            try Terminal.json(report)
        case .csv:
            Terminal.out(
                [by.rawValue, "used_gpu_hours", "used_cpu_hours", "used_gib_hours", "contributed_gpu_hours", "contributed_cpu_hours", "contributed_gib_hours"]
                    .joined(separator: ","))
            for row in report.rows {
                let numbers = [row.used.gpu, row.used.cpu, row.used.memory, row.contributed.gpu, row.contributed.cpu, row.contributed.memory]
                Terminal.out(([Self.csv(row.key)] + numbers.map { ShareText.number($0, decimals: 4) }).joined(separator: ","))
            }
        case .table:
            Terminal.out(
                "usage by \(by.rawValue)" + (report.partner.map { " of partner \($0)" } ?? "")
                    + " from \(TimeText.local(report.since)) to \(TimeText.local(report.until))")
            var table = Table(
                by.rawValue.uppercased(), "USED GPU-H", "USED CPU-H", "USED GIB-H", "CONTRIB GPU-H", "CONTRIB CPU-H", "CONTRIB GIB-H")
            for row in report.rows {
                let contributed = by == .project ? ["-", "-", "-"] : [row.contributed.gpu, row.contributed.cpu, row.contributed.memory].map(ShareText.hours)
                table.append(row: [row.key] + [row.used.gpu, row.used.cpu, row.used.memory].map(ShareText.hours) + contributed)
            }
            table.print(empty: "no usage in that time")
        }
    }

    /// A CSV field, quoted when it holds a comma, a quote or a line break.
    static func csv(_ field: String) -> String {
        guard field.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return field }
        return "\"" + field.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
