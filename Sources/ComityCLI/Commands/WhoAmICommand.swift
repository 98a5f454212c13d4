import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore

/// `comity whoami`.
struct WhoAmICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "whoami",
        abstract: "Show who the token belongs to: principal, role and scope."
    )

    @OptionGroup(title: "Global Options")
    var global: GlobalOptions

    func run() async throws {
        let me = try await global.client().whoami()
        if global.isJSON { return try Terminal.json(me) }
        var details = Details()
        details.append("principal", me.principal)
        details.append("role", me.role.rawValue)
        details.append("partner", me.partner)
        details.append("project", me.project)
        if let hostId = me.hostId { details.append("host", String(hostId)) }
        details.append("server", global.serverURL)
        details.print()
    }
}
