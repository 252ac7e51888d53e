// ContentInspector: checks message bytes against the line rules of RFC 5321 as they stream past.
// Policy (README "Message content"): only CRLF ends a line; bare CR, bare LF and NUL are refused,
// and so is a text line over 1000 octets including its CRLF (§4.5.3.1.6).
namespace Relay.Inbound.Content;

internal enum ContentProblem { None, BareLineEnding, Nul, LineTooLong }

internal struct ContentInspector
{
    public const int MaxLineOctets = 998; // 1000 including CRLF

    private bool _pendingCr;
    private int _lineLength;

    public ContentProblem Problem { get; private set; }

    public void Inspect(ReadOnlySpan<byte> data)
    {
        var i = 0;
        while (i < data.Length && Problem == ContentProblem.None)
        {
            if (_pendingCr)
            {
                _pendingCr = false;
                if (data[i] == (byte)'\n')
                {
                    _lineLength = 0;
                    i++;
                    continue;
                }

                Problem = ContentProblem.BareLineEnding;
                return;
            }

            var rest = data[i..];
            var special = rest.IndexOfAny((byte)'\r', (byte)'\n', (byte)'\0');
            var run = special < 0 ? rest.Length : special;
            _lineLength += run;
            if (_lineLength > MaxLineOctets)
            {
                Problem = ContentProblem.LineTooLong;
                return;
            }

            i += run;
            if (special < 0)
            {
                return;
            }

            switch (data[i++])
            {
                case (byte)'\r':
                    _pendingCr = true;
                    break;
                case (byte)'\n':
                    Problem = ContentProblem.BareLineEnding;
                    break;
                default:
                    Problem = ContentProblem.Nul;
                    break;
            }
        }
    }

    /// <summary>End of the message: a CR with nothing after it is bare too.</summary>
    public void Complete()
    {
        if (_pendingCr && Problem == ContentProblem.None)
        {
            Problem = ContentProblem.BareLineEnding;
        }
    }
}
