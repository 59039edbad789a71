//! The `focalpoint` binary: parses the command line and hands over to [`focalpoint::cli`].

fn main() -> std::process::ExitCode {
    focalpoint::cli::main()
}
