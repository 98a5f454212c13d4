/// The rule for names of jobs, projects, datasets and hosts.
public enum Name {
    /// Letters, digits, `-`, `_` and `.`, starting with a letter or digit, at most 128 characters.
    public static func isValid(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, text.count <= 128 else { return false }
        return isAlphanumeric(first) && text.unicodeScalars.allSatisfy { isAlphanumeric($0) || $0 == "-" || $0 == "_" || $0 == "." }
    }

    static func isAlphanumeric(_ c: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c)
    }
}
