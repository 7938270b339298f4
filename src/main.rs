fn main() -> std::process::ExitCode {
    lineside::cli::main()
}
