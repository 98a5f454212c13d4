import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore
import Foundation

/// `comity services list|show|scale`: inference services and their replicas.
struct ServicesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "services",
        abstract: "List, show and scale inference services (jobs with kind: inference).",
        discussion: """
            A service is submitted like any job file (comity submit llm.yaml) with kind: inference and a service: \
            block (replicas, restart, health, health_interval). Each replica runs as its own job on its own host; \
            a replica whose job ends is replaced. NAME is the service's name, or PROJECT:NAME where names repeat.
            """,
        subcommands: [List.self, Show.self, Scale.self],
        defaultSubcommand: List.self
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the services in this token's scope.")

        @Option(help: ArgumentHelp("Only this project's services.", valueName: "name"))
        var project: String?

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let services = try await global.client().services(project: project)
            if global.isJSON { return try Terminal.json(services) }
            var table = Table("NAME", "PROJECT", "REPLICAS", "HEALTHY", "RUNNING ON", "UPDATED")
            for service in services {
                let hosts = service.replicaJobs.compactMap(\.host)
                table.append(
                    service.name, service.project, String(service.replicas), "\(service.healthy)/\(service.replicas)",
                    hosts.isEmpty ? "-" : hosts.joined(separator: ","), TimeText.local(service.updatedAt))
            }
            table.print(empty: "no services")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one service and each of its replicas.")

        @Argument(help: ArgumentHelp("The service.", valueName: "name"))
        var name: String

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let service = try await global.client().service(name)
            if global.isJSON { return try Terminal.json(service) }
            ServicesCommand.print(service)
        }
    }

    struct Scale: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set how many replicas a service runs.",
            discussion: """
                Scaling up adds a job for every missing replica at once; scaling down cancels the highest-numbered \
                replicas. --replicas 0 stops every replica and keeps the service. Example: comity services scale llm --replicas 3
                """)

        @Argument(help: ArgumentHelp("The service.", valueName: "name"))
        var name: String

        @Option(help: ArgumentHelp("Replicas to run, 0 to 64.", valueName: "n"))
        var replicas: Int

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func validate() throws {
            guard ServiceSpec.Limits.scaleReplicas.contains(replicas) else {
                throw ValidationError("--replicas: expected 0 to 64, got \(replicas)")
            }
        }

        func run() async throws {
            let service = try await global.client().scaleService(name, replicas: replicas)
            if global.isJSON { return try Terminal.json(service) }
            ServicesCommand.print(service)
        }
    }

    static func print(_ service: ServiceView) {
        var details = Details()
        details.append("service", service.name)
        details.append("project", "\(service.project) (partner \(service.partner))")
        details.append("replicas", "\(service.replicas) wanted, \(service.healthy) healthy")
        if let spec = service.spec.service {
            let health = spec.healthPath.map { "GET \($0)" } ?? spec.healthCommand.map { $0.shellQuoted } ?? "process running"
            details.append("health", "\(health) every \(spec.healthIntervalSeconds)s")
            details.append("restart", spec.restart.rawValue)
        }
        details.append("command", service.spec.command.shellQuoted)
        details.append("resources", service.spec.resources.summary)
        details.append("created", "\(TimeText.local(service.createdAt)) by \(service.createdBy)")
        details.print()
        Terminal.out("")
        var table = Table("REPLICA", "JOB", "STATE", "HOST", "REGION", "URL", "HEALTH", "RESTARTS", "CHECKED")
        for replica in service.replicaJobs {
            let health: String =
                switch replica.healthy {
                case true?: "healthy"
                case false?: "unhealthy" + (replica.message.map { ": \($0)" } ?? "")
                case nil: replica.state.isTerminal ? (replica.message ?? "-") : "-"
                }
            table.append(
                String(replica.index) + (replica.index >= service.replicas ? " (stopping)" : ""), String(replica.job), replica.state.rawValue,
                replica.host ?? "-", replica.region ?? "-", replica.url ?? "-", health, String(replica.restarts),
                replica.checkedAt.map { TimeText.relative($0) } ?? "-")
        }
        table.print(empty: "no replicas")
    }
}

/// `comity endpoints NAME`: where a service answers.
struct EndpointsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "endpoints",
        abstract: "List a service's healthy replicas: host, region, jurisdiction and URL.",
        discussion: """
            Only replicas whose last health check passed, on hosts that are up, are listed. To call the service \
            without choosing a replica, use the gateway: <server>/v1/gateway/NAME/<path> with your token and a \
            Comity-Data-Jurisdiction header naming where your data may be processed.
            """
    )

    @Argument(help: ArgumentHelp("The service (NAME or PROJECT:NAME).", valueName: "name"))
    var name: String

    @OptionGroup(title: "Global Options")
    var global: GlobalOptions

    func run() async throws {
        let list = try await global.client().endpoints(name)
        if global.isJSON { return try Terminal.json(list) }
        var table = Table("REPLICA", "HOST", "REGION", "JURISDICTION", "URL", "RESTARTS", "CHECKED")
        for endpoint in list.endpoints {
            table.append(
                String(endpoint.replica), endpoint.host, endpoint.region, endpoint.jurisdiction, endpoint.url, String(endpoint.restarts),
                TimeText.relative(endpoint.checkedAt))
        }
        table.print(empty: "service \(list.service) has no healthy replica")
    }
}
