using System.Text;
using Relay.Inbound.Protocol;
using Relay.Spool;

namespace Relay.Inbound.Tests.Unit;

public sealed class SmtpCommandParserTests
{
    [Theory]
    [InlineData("ehlo x.test", "Ehlo", "x.test")]
    [InlineData("MAIL FROM:<a@b.test>  SIZE=1 ", "Mail", "FROM:<a@b.test>  SIZE=1")]
    [InlineData("StartTLS", "StartTls", "")]
    [InlineData("XYZZY", "Unknown", "")]
    [InlineData("", "Unknown", "")]
    public void Verbs_are_case_insensitive_and_the_argument_is_trimmed(string line, string verb, string argument)
    {
        var command = SmtpCommandParser.Parse(Encoding.UTF8.GetBytes(line));
        Assert.Equal(new SmtpCommand(Enum.Parse<SmtpVerb>(verb), argument), command);
    }

    [Fact]
    public void Nul_and_bare_CR_make_a_line_unparseable()
    {
        Assert.Null(SmtpCommandParser.Parse("NOOP\0"u8));
        Assert.Null(SmtpCommandParser.Parse("NOOP\rQUIT"u8));
    }

    [Fact]
    public void Mail_from_with_every_parameter()
    {
        Assert.True(SmtpCommandParser.TryParseMail(
            "FROM:<a@b.test> SIZE=1234 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=id+2Bx MT-PRIORITY=-4 AUTH=<>", out var mail, out _));
        Assert.Equal(new SmtpPath("a", "b.test", false, false), mail.Sender);
        Assert.Equal(1234, mail.DeclaredSize);
        Assert.Equal(BodyType.EightBitMime, mail.Body);
        Assert.True(mail.SmtpUtf8);
        Assert.Equal(DsnReturn.Headers, mail.Return);
        Assert.Equal("id+x", mail.EnvelopeId);
        Assert.Equal(-4, mail.MtPriority);
    }

    [Fact]
    public void Null_sender_and_space_after_colon_are_accepted()
    {
        Assert.True(SmtpCommandParser.TryParseMail("FROM:<>", out var nullSender, out _));
        Assert.Null(nullSender.Sender);
        Assert.True(SmtpCommandParser.TryParseMail("from: <a@b.test>", out var spaced, out _));
        Assert.Equal("a@b.test", spaced.Sender!.Address);
    }

    [Theory]
    [InlineData("FROM:<a@b.test> MT-PRIORITY=10")]
    [InlineData("FROM:<a@b.test> MT-PRIORITY=-10")]
    [InlineData("FROM:<a@b.test> MT-PRIORITY=1.5")]
    [InlineData("FROM:<a@b.test> MT-PRIORITY=")]
    [InlineData("FROM:<a@b.test> MT-PRIORITY")]
    public void Mt_priority_outside_minus_9_to_9_is_501_5_5_4(string argument)
    {
        Assert.False(SmtpCommandParser.TryParseMail(argument, out _, out var error));
        Assert.Equal((501, "5.5.4"), (error.Code, error.Enhanced));
    }

    [Theory]
    [InlineData("<@a.test,@b.test:u@c.test>", "u", "c.test", false, true)]
    [InlineData("<\"john doe\"@x.test>", "\"john doe\"", "x.test", true, false)]
    [InlineData("<\"a\\\"b\"@x.test>", "\"a\\\"b\"", "x.test", true, false)]
    [InlineData("<u%v@x.test>", "u%v", "x.test", false, false)]
    [InlineData("<u@[192.0.2.1]>", "u", "[192.0.2.1]", false, false)]
    [InlineData("<u@[IPv6:2001:db8::1]>", "u", "[IPv6:2001:db8::1]", false, false)]
    [InlineData("<jörg@bücher.test>", "jörg", "bücher.test", false, false)]
    public void Paths_follow_rfc5321(string text, string local, string domain, bool quoted, bool route)
    {
        var pos = 0;
        Assert.True(SmtpCommandParser.TryParsePath(text, ref pos, allowNull: false, out var path));
        Assert.Equal(new SmtpPath(local, domain, quoted, route), path);
        Assert.Equal(text.Length, pos);
    }

    [Theory]
    [InlineData("<a@b.test")]
    [InlineData("a@b.test")]
    [InlineData("<a.@b.test>")]
    [InlineData("<.a@b.test>")]
    [InlineData("<a@b..test>")]
    [InlineData("<a@b-.test>")]
    [InlineData("<a@[300.1.1.1]>")]
    [InlineData("<a@>")]
    [InlineData("<@b.test>")]
    [InlineData("<a b@c.test>")]
    [InlineData("<\"unterminated@c.test>")]
    public void Malformed_paths_are_refused(string text)
    {
        var pos = 0;
        Assert.False(SmtpCommandParser.TryParsePath(text, ref pos, allowNull: false, out _));
    }

    [Fact]
    public void Paths_over_the_rfc_lengths_are_refused()
    {
        var pos = 0;
        Assert.False(SmtpCommandParser.TryParsePath($"<{new string('a', 65)}@b.test>", ref pos, false, out _));
        pos = 0;
        Assert.True(SmtpCommandParser.TryParsePath($"<{new string('a', 64)}@b.test>", ref pos, false, out _));
    }

    [Fact]
    public void Rcpt_parameters_notify_and_orcpt()
    {
        Assert.True(SmtpCommandParser.TryParseRcpt("TO:<b@c.test> NOTIFY=success,delay ORCPT=rfc822;b+2Bx@c.test", false, out var rcpt, out _));
        Assert.Equal(DsnNotify.Success | DsnNotify.Delay, rcpt.Notify);
        Assert.Equal("rfc822;b+x@c.test", rcpt.OriginalRecipient);
        Assert.True(SmtpCommandParser.TryParseRcpt("TO:<b@c.test> NOTIFY=NEVER", false, out var never, out _));
        Assert.Equal(DsnNotify.Never, never.Notify);
        Assert.False(SmtpCommandParser.TryParseRcpt("TO:<b@c.test> NOTIFY=FAILURE,FAILURE", false, out _, out _));
        Assert.False(SmtpCommandParser.TryParseRcpt("TO:<jörg@c.test>", false, out _, out var ascii));
        Assert.Equal(SmtpReplies.NonAsciiAddress, ascii);
        Assert.True(SmtpCommandParser.TryParseRcpt("TO:<jörg@c.test>", true, out _, out _));
    }

    [Theory]
    [InlineData("a+2Bb", "a+b")]
    [InlineData("+C3+A9", "é")]
    [InlineData("plain", "plain")]
    public void Xtext_is_decoded(string xtext, string expected)
    {
        Assert.True(SmtpCommandParser.TryDecodeXtext(xtext, out var decoded));
        Assert.Equal(expected, decoded);
    }

    [Theory]
    [InlineData("a+2b")]  // hex must be upper case
    [InlineData("a+2")]
    [InlineData("a=b")]
    [InlineData("a b")]
    [InlineData("+FF")]   // not UTF-8
    public void Bad_xtext_is_refused(string xtext) => Assert.False(SmtpCommandParser.TryDecodeXtext(xtext, out _));

    [Theory]
    [InlineData("100", 100, false)]
    [InlineData("0 LAST", 0, true)]
    [InlineData("7 last", 7, true)]
    public void Bdat_arguments(string argument, long size, bool last)
    {
        Assert.True(SmtpCommandParser.TryParseBdat(argument, out var bdat));
        Assert.Equal(new BdatCommand(size, last), bdat);
    }

    [Theory]
    [InlineData("")]
    [InlineData("-1")]
    [InlineData("10 FIRST")]
    [InlineData("1 LAST extra")]
    [InlineData("99999999999999999999")]
    public void Bad_bdat_arguments(string argument) => Assert.False(SmtpCommandParser.TryParseBdat(argument, out _));
}
