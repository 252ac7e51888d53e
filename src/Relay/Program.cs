// relay: the executable. Dispatches the DESIGN.md commands; `serve` (the default) runs the MTA.
using Relay.Commands;

return await CommandLine.RunAsync(args, Console.Out, Console.Error);
