// JournalRecords: the binary records of the state journal. Every change to the queue is one record;
// replaying them in order rebuilds the queue. A snapshot segment is the same records, one per live message.
namespace Relay.Spool;

internal enum RecordType : byte
{
    /// <summary>A message with the full state of every recipient (written at commit and in snapshots).</summary>
    Message = 1,
    /// <summary>New states for some recipients of one message.</summary>
    Update = 2,
    /// <summary>The message is gone (delivered, or its dead-letter retention ended).</summary>
    Remove = 3,
    /// <summary>Every recipient is final and one failed: kept until retention ends.</summary>
    DeadLetter = 4,
    /// <summary>The message was unreadable and moved to the quarantine folder.</summary>
    Quarantine = 5,
    /// <summary>Some recipients moved to another schedule / virtual queue (config reload).</summary>
    Reroute = 6,
    /// <summary>Last record of a complete snapshot segment.</summary>
    SnapshotEnd = 7,
    /// <summary>
    /// The bytes of a small message (its message-file image: body, envelope, footer), kept in the journal itself
    /// so that accepting it costs no file of its own. Written just before its first Message record, in the same
    /// group commit; copied into every snapshot while the message lives.
    /// </summary>
    Body = 8,
}

internal static class JournalRecords
{
    public static byte[] Message(SpooledMessage m)
    {
        using var ms = new MemoryStream(64 + m.Slots.Length * 48);
        using var w = new BinaryWriter(ms);
        w.Write((byte)RecordType.Message);
        w.Write(m.Id);
        w.Write(m.ArrivedTicks);
        w.Write((sbyte)m.Priority);
        w.Write(m.FinalizedTicks);
        w.Write7BitEncodedInt(m.Slots.Length);
        foreach (ref readonly var s in m.Slots.AsSpan())
        {
            w.Write(s.Domain);
            w.Write(s.Route.Schedule);
            w.Write(s.Route.Queue);
            WriteState(w, s.Status, s.Attempts, s.NextTicks, s.NotifySent, s.Reported, s.Error);
        }
        w.Flush();
        return ms.ToArray();
    }

    public static byte[] Update(string id, IReadOnlyList<RecipientChange> changes)
    {
        using var ms = new MemoryStream(32 + changes.Count * 24);
        using var w = new BinaryWriter(ms);
        w.Write((byte)RecordType.Update);
        w.Write(id);
        w.Write7BitEncodedInt(changes.Count);
        foreach (var c in changes)
        {
            w.Write7BitEncodedInt(c.Index);
            WriteState(w, c.Status, c.Attempts, c.NextAttemptAt?.UtcTicks ?? 0, c.NotifySent, c.FinalReported, c.LastError);
        }
        w.Flush();
        return ms.ToArray();
    }

    public static byte[] Reroute(string id, IReadOnlyList<(int Index, string Schedule, string Queue)> moves)
    {
        using var ms = new MemoryStream(32 + moves.Count * 24);
        using var w = new BinaryWriter(ms);
        w.Write((byte)RecordType.Reroute);
        w.Write(id);
        w.Write7BitEncodedInt(moves.Count);
        foreach (var (index, schedule, queue) in moves)
        {
            w.Write7BitEncodedInt(index);
            w.Write(schedule);
            w.Write(queue);
        }
        w.Flush();
        return ms.ToArray();
    }

    /// <summary>Offset of the message-file image inside a Body payload: type byte, then the id as a BinaryWriter string.</summary>
    public const int BodyImageStart = 2 + MessageId.Length;

    /// <summary>A Body record with room for an image of <paramref name="imageLength"/> bytes, to be filled at BodyImageStart.</summary>
    public static byte[] Body(string id, int imageLength)
    {
        if (id.Length != MessageId.Length) throw new ArgumentException("not a queue id", nameof(id));
        var payload = new byte[BodyImageStart + imageLength];
        payload[0] = (byte)RecordType.Body;
        payload[1] = MessageId.Length;   // BinaryWriter's 7-bit length prefix of a 16-character ASCII string
        System.Text.Encoding.ASCII.GetBytes(id, payload.AsSpan(2));
        return payload;
    }

    /// <summary>The id of a Body payload.</summary>
    public static string BodyId(ReadOnlySpan<byte> payload) => System.Text.Encoding.ASCII.GetString(payload.Slice(2, MessageId.Length));

    public static byte[] Remove(string id) => IdRecord(RecordType.Remove, id, null, 0);
    public static byte[] DeadLetter(string id, long finalizedTicks) => IdRecord(RecordType.DeadLetter, id, null, finalizedTicks);
    public static byte[] Quarantine(string id, string reason) => IdRecord(RecordType.Quarantine, id, reason, 0);
    public static byte[] SnapshotEnd(long count) => IdRecord(RecordType.SnapshotEnd, "", null, count);

    private static byte[] IdRecord(RecordType type, string id, string? text, long number)
    {
        using var ms = new MemoryStream(32);
        using var w = new BinaryWriter(ms);
        w.Write((byte)type);
        w.Write(id);
        w.Write(number);
        w.Write(text ?? "");
        w.Flush();
        return ms.ToArray();
    }

    private static void WriteState(BinaryWriter w, RecipientStatus status, int attempts, long nextTicks, int notifySent,
                                   bool reported, DeliveryError? error)
    {
        w.Write((byte)status);
        w.Write7BitEncodedInt(attempts);
        w.Write(nextTicks);
        w.Write7BitEncodedInt(notifySent);
        w.Write(reported);
        w.Write(error is not null);
        if (error is null) return;
        w.Write(error.Code);
        w.Write(error.EnhancedStatus);
        w.Write(error.Text);
        w.Write(error.RemoteHost ?? "");
    }

    public static void ReadState(BinaryReader r, ref Slot slot)
    {
        slot.Status = (RecipientStatus)r.ReadByte();
        slot.Attempts = r.Read7BitEncodedInt();
        slot.NextTicks = r.ReadInt64();
        slot.NotifySent = r.Read7BitEncodedInt();
        slot.Reported = r.ReadBoolean();
        slot.Error = null;
        if (!r.ReadBoolean()) return;
        var code = r.ReadInt32();
        var enhanced = r.ReadString();
        var text = r.ReadString();
        var host = r.ReadString();
        slot.Error = new DeliveryError(code, enhanced, text, host.Length == 0 ? null : host);
    }

    /// <summary>Reads the (type, id, number, text) of a small record written by <see cref="IdRecord"/>.</summary>
    public static (string Id, long Number, string Text) ReadIdRecord(BinaryReader r) => (r.ReadString(), r.ReadInt64(), r.ReadString());
}
