using System.Net;
using MimeKit;
using Relay.Api.Tests.Harness;

namespace Relay.Api.Tests;

/// <summary>[templates] path: &lt;name&gt;.subject/.txt/.html rendered with Fluid (Liquid).</summary>
public sealed class TemplateTests : IAsyncLifetime
{
    private ApiHarness _h = null!;

    public async Task InitializeAsync()
    {
        _h = await ApiHarness.StartAsync();
        File.WriteAllText(Path.Combine(_h.TemplatesPath, "welcome.subject"), "Welcome, {{ name }}!\n");
        File.WriteAllText(Path.Combine(_h.TemplatesPath, "welcome.txt"), "Hi {{ name }}, your code is {{ code }}.{% for i in items %} [{{ i }}]{% endfor %}");
        File.WriteAllText(Path.Combine(_h.TemplatesPath, "welcome.html"), "<p>Hi {{ name }}, your code is <b>{{ code }}</b>. {{ user.plan }}</p>");
        File.WriteAllText(Path.Combine(_h.TemplatesPath, "plain.txt"), "Just text for {{ name }}.");
        File.WriteAllText(Path.Combine(_h.TemplatesPath, "notes.md"), "not a template");
    }

    public async Task DisposeAsync() => await _h.DisposeAsync();

    [Fact]
    public async Task Subject_text_and_html_render_into_a_multipart_alternative_message()
    {
        var id = await _h.SubmitAsync("""
            { "from": "a@app.test", "to": "x@remote.test", "template": "welcome",
              "vars": { "name": "Zoë <admin>", "code": 123456, "items": ["a", "b"], "user": { "plan": "pro" } } }
            """);
        var m = await _h.LoadAsync(id);
        Assert.Equal("Welcome, Zoë <admin>!", m.Subject);
        var alternative = Assert.IsType<MultipartAlternative>(m.Body);
        Assert.Equal(2, alternative.Count);
        Assert.Equal("Hi Zoë <admin>, your code is 123456. [a] [b]", m.TextBody!.Trim());
        Assert.Equal("<p>Hi Zoë &lt;admin&gt;, your code is <b>123456</b>. pro</p>", m.HtmlBody!.Trim());   // html-escaped in html only
    }

    [Fact]
    public async Task A_text_only_template_takes_the_requests_subject()
    {
        var id = await _h.SubmitAsync("""{ "from": "a@app.test", "to": "x@remote.test", "subject": "Note", "template": "plain", "vars": { "name": "Bo" } }""");
        var m = await _h.LoadAsync(id);
        Assert.Equal("Note", m.Subject);
        Assert.IsType<TextPart>(m.Body);
        Assert.Equal("Just text for Bo.", m.TextBody!.Trim());
    }

    [Fact]
    public async Task An_unknown_template_is_400_naming_it()
    {
        using var response = await _h.PostAsync("""{ "from": "a@app.test", "to": "x@remote.test", "template": "nosuch" }""");
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var errors = (await ApiHarness.JsonAsync(response))["errors"]!;
        Assert.Contains("nosuch", errors["template"]![0]!.GetValue<string>());
        Assert.Equal(0, _h.StoredMessages);
    }

    [Fact]
    public async Task A_missing_variable_is_400_naming_each_one()
    {
        using var response = await _h.PostAsync("""{ "from": "a@app.test", "to": "x@remote.test", "template": "welcome", "vars": { "name": "Al" } }""");
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var errors = (await ApiHarness.JsonAsync(response))["errors"]!.AsObject();
        Assert.True(errors.ContainsKey("vars.code"), errors.ToJsonString());
        Assert.True(errors.ContainsKey("vars.user"), errors.ToJsonString());
        Assert.False(errors.ContainsKey("vars.name"));
        Assert.Equal(0, _h.StoredMessages);
    }

    [Fact]
    public async Task A_template_with_a_literal_body_is_400()
    {
        using var response = await _h.PostAsync("""{ "from": "a@app.test", "to": "x@remote.test", "template": "plain", "text": "x", "vars": { "name": "Bo" } }""");
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.NotNull((await ApiHarness.JsonAsync(response))["errors"]!["text"]);
    }

    [Fact]
    public async Task The_templates_route_lists_each_template_and_its_parts()
    {
        using var response = await _h.SendAsync(HttpMethod.Get, "/api/v1/templates", ApiHarness.AppToken);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var list = (await ApiHarness.JsonAsync(response))["templates"]!.AsArray();
        Assert.Equal(["plain", "welcome"], list.Select(t => t!["name"]!.GetValue<string>()));
        var welcome = list[1]!;
        Assert.True(welcome["subject"]!.GetValue<bool>() && welcome["text"]!.GetValue<bool>() && welcome["html"]!.GetValue<bool>());
        Assert.False(list[0]!["html"]!.GetValue<bool>());
    }

    [Fact]
    public async Task An_edited_template_is_used_without_a_restart()
    {
        var first = await _h.LoadAsync(await _h.SubmitAsync("""{ "from": "a@app.test", "to": "x@remote.test", "template": "plain", "vars": { "name": "A" } }"""));
        Assert.Equal("Just text for A.", first.TextBody!.Trim());
        var file = Path.Combine(_h.TemplatesPath, "plain.txt");
        File.WriteAllText(file, "Changed for {{ name }}.");
        File.SetLastWriteTimeUtc(file, DateTime.UtcNow.AddMinutes(1));
        var second = await _h.LoadAsync(await _h.SubmitAsync("""{ "from": "a@app.test", "to": "x@remote.test", "template": "plain", "vars": { "name": "B" } }"""));
        Assert.Equal("Changed for B.", second.TextBody!.Trim());
    }
}
