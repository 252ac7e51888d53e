// DotUnstuffer: removes RFC 5321 §4.5.2 dot-stuffing from DATA and finds the end of the message.
// Only <CRLF>.<CRLF> ends the message. A bare LF or bare CR never starts a line here, so
// "<LF>.<CR><LF>" and "<CR>.<CR><LF>" (SMTP smuggling) are ordinary content.
namespace Relay.Inbound.Protocol;

internal struct DotUnstuffer
{
    private enum State : byte { LineStart, Middle, SawCr, Dot, DotCr }

    private State _state; // default LineStart: the first line of the data starts right after the 354

    /// <summary>
    /// Unstuffs <paramref name="input"/> into <paramref name="output"/>, which must hold at least
    /// <c>input.Length + 1</c> bytes (a CR held back across calls may come out). Returns how many
    /// input bytes were consumed; when <paramref name="ended"/> is true the terminator is consumed
    /// too and the rest of the input belongs to the next command.
    /// </summary>
    public int Process(ReadOnlySpan<byte> input, Span<byte> output, out int written, out bool ended)
    {
        var w = 0;
        var i = 0;
        ended = false;
        while (i < input.Length)
        {
            switch (_state)
            {
                case State.Middle:
                {
                    // Fast path: copy everything up to the next CR.
                    var rest = input[i..];
                    var cr = rest.IndexOf((byte)'\r');
                    var run = cr < 0 ? rest.Length : cr;
                    rest[..run].CopyTo(output[w..]);
                    w += run;
                    i += run;
                    if (cr >= 0)
                    {
                        output[w++] = (byte)'\r';
                        i++;
                        _state = State.SawCr;
                    }

                    break;
                }

                case State.SawCr:
                {
                    var b = input[i++];
                    output[w++] = b;
                    _state = b switch { (byte)'\n' => State.LineStart, (byte)'\r' => State.SawCr, _ => State.Middle };
                    break;
                }

                case State.LineStart:
                {
                    var b = input[i++];
                    if (b == (byte)'.')
                    {
                        _state = State.Dot;
                    }
                    else
                    {
                        output[w++] = b;
                        _state = b == (byte)'\r' ? State.SawCr : State.Middle;
                    }

                    break;
                }

                case State.Dot:
                {
                    var b = input[i++];
                    if (b == (byte)'\r')
                    {
                        _state = State.DotCr;
                    }
                    else
                    {
                        output[w++] = b; // the leading dot is dropped
                        _state = State.Middle;
                    }

                    break;
                }

                case State.DotCr:
                {
                    var b = input[i++];
                    if (b == (byte)'\n')
                    {
                        written = w;
                        ended = true;
                        _state = State.LineStart;
                        return i;
                    }

                    // ".<CR>x": a stuffed line whose dot goes; the CR we held back is content.
                    output[w++] = (byte)'\r';
                    output[w++] = b;
                    _state = b switch { (byte)'\n' => State.LineStart, (byte)'\r' => State.SawCr, _ => State.Middle };
                    break;
                }
            }
        }

        written = w;
        return i;
    }
}
