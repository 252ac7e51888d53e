# Multi-stage build: the SDK image builds and publishes `relay`, the ASP.NET runtime image runs it.
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY Directory.Build.props Directory.Packages.props Relay.sln ./
COPY src/ src/
RUN dotnet publish src/Relay/Relay.csproj -c Release -o /out --nologo

FROM mcr.microsoft.com/dotnet/aspnet:10.0 AS runtime
WORKDIR /app
COPY --from=build /out/ ./
COPY config/ ./config/
# A non-root user owns the spool: spool files are readable by the relay's user only.
RUN groupadd --system relay && useradd --system --gid relay --home-dir /app --shell /usr/sbin/nologin relay \
    && mkdir -p /app/spool && chown relay:relay /app/spool && chmod 0700 /app/spool
USER relay
VOLUME ["/app/spool"]
# SMTP (shipped config: 2525) and the admin API (8025); mount your own config/ to change binds.
EXPOSE 2525 8025
ENTRYPOINT ["./relay"]
CMD ["serve", "--config", "config/config.toml"]
