// Deletes the topics whose names start with a prefix: the cluster target's
// cleanup (sbctl has no command for it). Run as a single-file source program
// with the Kafka jars that scripts/kafka.sh fetched on the class path:
//
//   java -cp "$HOME/.cache/switchboard/kafka-4.1.1/libs/*" DeleteTopics.java 127.0.0.1:19092 conf1234abcd.
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public class DeleteTopics {
    public static void main(String[] args) throws Exception {
        if (args.length != 2 || args[1].length() < 5 || !args[1].endsWith(".")) {
            System.err.println("usage: DeleteTopics <bootstrap> <prefix ending in '.'>");
            System.exit(64);
        }
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "30000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "60000");
        try (Admin admin = Admin.create(props)) {
            List<String> ours = admin.listTopics().names().get(60, TimeUnit.SECONDS).stream()
                .filter(name -> name.startsWith(args[1])).sorted().toList();
            if (ours.isEmpty()) {
                System.out.println("no topics named " + args[1] + "*");
                return;
            }
            admin.deleteTopics(ours).all().get(60, TimeUnit.SECONDS);
            System.out.println("deleted " + ours.size() + " topics: " + String.join(", ", ours));
        }
    }
}
