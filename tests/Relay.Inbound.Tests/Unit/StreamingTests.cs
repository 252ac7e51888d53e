using System.Buffers;
using System.Text;
using Relay.Inbound.Content;
using Relay.Inbound.Protocol;
using Relay.Spool;

namespace Relay.Inbound.Tests.Unit;

public sealed class DotUnstufferTests
{
    /// <summary>Feeds the input in pieces of <paramref name="piece"/> bytes; returns output and where it ended.</summary>
    private static (string Output, int EndAt) Run(string input, int piece)
    {
        var bytes = Encoding.ASCII.GetBytes(input);
        var unstuffer = new DotUnstuffer();
        var output = new StringBuilder();
        var scratch = new byte[piece + 1];
        for (var at = 0; at < bytes.Length; at += piece)
        {
            var chunk = bytes.AsSpan(at, Math.Min(piece, bytes.Length - at));
            var consumed = unstuffer.Process(chunk, scratch, out var written, out var ended);
            output.Append(Encoding.ASCII.GetString(scratch, 0, written));
            if (ended)
            {
                return (output.ToString(), at + consumed);
            }
        }

        return (output.ToString(), -1);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(1000)]
    public void Unstuffs_and_ends_at_crlf_dot_crlf_whatever_the_packet_size(int piece)
    {
        var input = "a\r\n..b\r\n.c\r\n.\rd\r\n\n.\r\n\r.\r\n.\r\nNEXT";
        var (output, endAt) = Run(input, piece);
        Assert.Equal("a\r\n.b\r\nc\r\n\rd\r\n\n.\r\n\r.\r\n", output);
        Assert.Equal(input.Length - "NEXT".Length, endAt);
    }

    [Fact]
    public void An_empty_message_is_just_the_dot_line() => Assert.Equal(("", 3), Run(".\r\nMAIL", 64));

    [Theory]
    [InlineData("x\n.\r\nMAIL")]
    [InlineData("x\r.\r\nMAIL")]
    [InlineData("x\r\n.\nMAIL")]
    public void Smuggling_sequences_do_not_end_the_data(string input) => Assert.Equal(-1, Run(input, 4).EndAt);
}

public sealed class SmtpLineReaderTests
{
    [Fact]
    public void Finds_a_crlf_line_and_advances_past_it()
    {
        var buffer = new ReadOnlySequence<byte>("NOOP\r\nQUIT"u8.ToArray());
        Assert.Equal(LineStatus.Line, SmtpLineReader.TryReadLine(ref buffer, 512, out var line));
        Assert.Equal("NOOP", Encoding.ASCII.GetString(line.ToArray()));
        Assert.Equal("QUIT", Encoding.ASCII.GetString(buffer.ToArray()));
        Assert.Equal(LineStatus.Incomplete, SmtpLineReader.TryReadLine(ref buffer, 512, out _));
    }

    [Fact]
    public void Bare_lf_and_too_long_are_reported()
    {
        var bare = new ReadOnlySequence<byte>("NOOP\nX"u8.ToArray());
        Assert.Equal(LineStatus.BareLineFeed, SmtpLineReader.TryReadLine(ref bare, 512, out _));
        Assert.Equal("X", Encoding.ASCII.GetString(bare.ToArray()));
        var longLine = new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes(new string('a', 600) + "\r\n"));
        Assert.Equal(LineStatus.TooLong, SmtpLineReader.TryReadLine(ref longLine, 512, out _));
        Assert.True(SmtpLineReader.TrySkipLine(ref longLine));
        Assert.True(longLine.IsEmpty);
    }
}

public sealed class IncomingMessageWriterTests
{
    private sealed class Sink(string id = "Q1") : IIncomingMessage
    {
        public MemoryStream Bytes { get; } = new();
        public string Id => id;
        public long Length => Bytes.Length;

        public ValueTask WriteAsync(ReadOnlyMemory<byte> bytes, CancellationToken cancellationToken = default)
        {
            Bytes.Write(bytes.Span);
            return ValueTask.CompletedTask;
        }

        public Task CommitAsync(MessageEnvelope envelope, CancellationToken cancellationToken = default) => Task.CompletedTask;
        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    private static async Task<(IncomingMessageWriter Writer, string Stored)> WriteAsync(string message, int piece = 7, long maxSize = 1 << 20)
    {
        var sink = new Sink();
        var writer = new IncomingMessageWriter(sink, maxSize, 2, _ => "X-Trace: 1\r\n"u8.ToArray());
        var bytes = Encoding.UTF8.GetBytes(message);
        for (var at = 0; at < bytes.Length; at += piece)
        {
            await writer.AppendAsync(bytes.AsMemory(at, Math.Min(piece, bytes.Length - at)), CancellationToken.None);
        }

        await writer.CompleteAsync(CancellationToken.None);
        return (writer, Encoding.UTF8.GetString(sink.Bytes.ToArray()));
    }

    [Fact]
    public async Task The_trace_prefix_comes_first_and_the_rest_is_byte_for_byte()
    {
        const string message = "Subject: hi\r\nX-Message-Priority: high\r\n folded\r\n\r\nbody: not a header\r\n";
        var (writer, stored) = await WriteAsync(message);
        Assert.Equal("X-Trace: 1\r\n" + message, stored);
        Assert.Equal("hi", writer.Headers!["Subject"]);
        Assert.Null(writer.Headers["body"]);
        Assert.Equal(message.Length, writer.ReceivedBytes);
    }

    [Fact]
    public async Task A_body_without_headers_ends_the_header_section_at_its_first_line()
    {
        var (writer, stored) = await WriteAsync("just text\r\nSubject: in the body\r\n");
        Assert.Empty(writer.Headers!);
        Assert.Equal("X-Trace: 1\r\njust text\r\nSubject: in the body\r\n", stored);
    }

    [Fact]
    public async Task A_header_section_that_never_ends_is_bounded()
    {
        var header = "X-Long: " + new string('a', 900) + "\r\n";
        var (writer, _) = await WriteAsync(string.Concat(Enumerable.Repeat(header, 400)), piece: 4096);
        Assert.Equal(MessageRejection.HeaderTooBig, writer.Rejection);
    }

    [Fact]
    public async Task Size_loop_and_content_problems_are_reported()
    {
        Assert.Equal(MessageRejection.TooBig, (await WriteAsync("Subject: x\r\n\r\n" + new string('a', 200) + "\r\n", maxSize: 100)).Writer.Rejection);
        Assert.Equal(MessageRejection.MailLoop, (await WriteAsync("Received: a\r\nReceived: b\r\nReceived: c\r\n\r\nx\r\n")).Writer.Rejection);
        Assert.Equal(MessageRejection.None, (await WriteAsync("Received: a\r\nReceived: b\r\n\r\nx\r\n")).Writer.Rejection);
        Assert.Equal(MessageRejection.BareLineEnding, (await WriteAsync("Subject: x\r\n\r\nx\r")).Writer.Rejection);
        Assert.Equal(MessageRejection.Nul, (await WriteAsync("Subject: x\r\n\r\n\0\r\n")).Writer.Rejection);
        Assert.Equal(MessageRejection.LineTooLong, (await WriteAsync("Subject: " + new string('a', 1000) + "\r\n\r\n")).Writer.Rejection);
    }
}
