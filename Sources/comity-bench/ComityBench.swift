import ArgumentParser

/// `comity-bench`: the benchmark driver behind `ops/bench`. Each subcommand prints one JSON object of results
/// (or writes it to --out) and its progress to standard error.
@main
struct ComityBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "comity-bench",
        abstract: "Benchmark driver for Comity (run by ops/bench).",
        subcommands: [
            RunCommand.self, LifecycleCommand.self, DispatchCommand.self, ScaleCommand.self, SharingScaleCommand.self, AgentMemoryCommand.self, RulesCommand.self, AuditVerifyCommand.self,
            GatewayCommand.self, ReportCommand.self,
        ]
    )
}
