{{/* Resource name prefix: release-chart, shortened to 63 characters. */}}
{{- define "traceflow-manager.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "traceflow-manager.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "traceflow-manager.labels" -}}
{{ include "traceflow-manager.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: traceflow
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "traceflow-manager.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "traceflow-manager.claimName" -}}
{{- if .Values.persistence.existingClaim -}}
{{ .Values.persistence.existingClaim }}
{{- else -}}
{{ include "traceflow-manager.fullname" . }}-data
{{- end -}}
{{- end -}}

{{/* The exec probe: grpc.health.v1 Check over TLS, verified with the manager's own CA. The
interface comes from the image's copy of the health .proto (reflection needs credentials; the
health service does not). */}}
{{- define "traceflow-manager.healthProbe" -}}
exec:
  command:
    - grpcurl
    - -import-path=/usr/share/traceflow
    - -proto=grpc-health-v1.proto
    - -cacert=/data/manager/ca.pem
    - -servername=localhost
    - -connect-timeout={{ .Values.probes.timeoutSeconds }}
    - 127.0.0.1:{{ .Values.port }}
    - grpc.health.v1.Health/Check
periodSeconds: {{ .Values.probes.periodSeconds }}
timeoutSeconds: {{ .Values.probes.timeoutSeconds }}
{{- end -}}
